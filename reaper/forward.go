package reaper

import (
	"syscall"

	"go.uber.org/zap/zapcore"

	"github.com/reaper-init/reaper/signals"
)

// fastForward reads the caught signals other than the stop signals (which
// the event loop reads from a channel of their own) once COMMAND runs. An
// ordinary signal it forwards itself, from the goroutine os/signal wakes:
// handing it to the event loop first would cost a wake-up of the loop's
// locked thread, a good part of the forwarding latency. Whatever needs the
// loop (SIGCONT and the terminal, a COMMAND already reaped, debug logs,
// errors) goes there, and so does every signal behind one still waiting
// there, so that none of these overtakes another. Stop signals are not
// ordered against them, in either direction.
func (s *supervisor) fastForward() {
	for v := range s.sigs {
		sig := v.(syscall.Signal)
		if s.loopPending.Load() == 0 && s.forwardNow(sig) {
			continue
		}
		s.loopPending.Add(1)
		s.loop <- sig
	}
}

// forwardNow forwards sig when that takes nothing but a kill(2), and
// reports whether it did. It holds reapMu: COMMAND's pid and group id are
// reserved until COMMAND is reaped, and reaping waits for the lock.
func (s *supervisor) forwardNow(sig syscall.Signal) bool {
	if s.log.enabled(zapcore.DebugLevel) || sig == syscall.SIGCONT {
		return false
	}
	out, ok := s.cfg.Policy.Forward(sig)
	if !ok {
		return true // dropped
	}
	s.reapMu.Lock()
	defer s.reapMu.Unlock()
	if s.childGone {
		return false
	}
	target := s.child
	if s.cfg.Policy.Target == signals.Group {
		target = -s.child
	}
	return syscall.Kill(target, out) == nil // on failure the loop tries again, and says why
}

// onSignal handles a caught signal other than SIGCHLD.
func (s *supervisor) onSignal(sig syscall.Signal) {
	if sig == syscall.SIGCONT {
		s.onContinued()
	}
	if !s.cfg.Policy.IsStop(sig) {
		s.forward(sig)
		return
	}
	switch s.phase {
	case running, draining:
		s.beginStop(reasonSignal, sig) // it forwards sig itself, after its walk
	case stopping:
		s.stop.stopSignals++
		if s.stop.reason == reasonSignal || s.stop.stopSignals > 1 {
			s.log.Info("second stop signal: killing now", stringerField("signal", sigName(sig)))
			s.killAll()
			return
		}
		// The stop began without a signal (COMMAND exited, or --timeout):
		// everyone already got the stop signal, and the deadline stands.
		s.log.Info("stop already under way", stringerField("signal", sigName(sig)))
	}
}

// forward passes a received signal on, after rewrites, to COMMAND's group or
// to COMMAND alone, and returns the signal it sent (0 if none). COMMAND's
// pid and group id stay reserved until reaper reaps it, so kill(2) is safe
// until then; afterwards the group's remaining members are signalled one by
// one through pidfds.
func (s *supervisor) forward(sig syscall.Signal) syscall.Signal {
	out, ok := s.cfg.Policy.Forward(sig)
	if !ok {
		s.log.Debug("dropped", stringerField("signal", sigName(sig)))
		return 0
	}
	group := s.cfg.Policy.Target == signals.Group
	var err error
	reached := 1
	switch {
	case !s.childGone && group:
		err = syscall.Kill(-s.child, out)
	case !s.childGone:
		err = syscall.Kill(s.child, out)
	case group:
		reached = s.signalGroupMembers(out)
	default:
		reached = 0
	}
	if err != nil {
		s.log.Warn("cannot forward signal", stringerField("signal", sigName(out)), errorField(err))
		return 0
	}
	if s.log.enabled(zapcore.DebugLevel) {
		s.log.Debug("forwarded", stringerField("received", sigName(sig)), stringerField("signal", sigName(out)),
			stringField("to", s.cfg.Policy.Target.String()), intField("pgid", s.child), intField("processes", reached))
	}
	return out
}

// signalGroupMembers signals the descendants still in COMMAND's process group
// after COMMAND itself is gone, and returns how many it reached.
func (s *supervisor) signalGroupMembers(sig syscall.Signal) int {
	n := 0
	s.walk(func(h *handle) {
		if h.PGID == s.child && h.signal(sig) == nil {
			n++
		}
		h.close()
	})
	return n
}

// onCommandStopped follows COMMAND into a job-control stop (Ctrl-Z, SIGTSTP,
// SIGTTIN, SIGTTOU) on a terminal: reaper gives the terminal back to its own
// group and stops that group, so that the shell that started the job sees
// it stop and shows its prompt. Without a terminal there is no job control: COMMAND
// just stays stopped until someone continues it.
func (s *supervisor) onCommandStopped(sig syscall.Signal) {
	s.log.Info("command stopped", intField("pid", s.child), stringerField("signal", sigName(sig)))
	if s.tty == nil || s.phase != running {
		return
	}
	if s.self == 1 {
		// PID 1 cannot stop itself, so nobody could continue COMMAND: a
		// stop on the container's terminal would freeze it for good.
		s.log.Info("PID 1 cannot stop: continuing the command")
		syscall.Kill(-s.child, syscall.SIGCONT)
		return
	}
	if s.tty.foreground() == s.child {
		s.tty.giveTo(s.tty.pgrp)
	}
	// The whole job stops, not reaper alone: a script that runs reaper
	// (sh -c 'reaper ...; echo') must stop too for its shell to see the
	// job stop.
	syscall.Kill(-s.tty.pgrp, syscall.SIGSTOP)
}

// onContinued hands the terminal to COMMAND's group again when reaper was
// continued in the foreground (the shell's fg); in the background (bg) it
// stays with the shell. forward then passes the SIGCONT on.
func (s *supervisor) onContinued() {
	if s.tty == nil || s.childGone || s.tty.foreground() != s.tty.pgrp {
		return
	}
	if err := s.tty.giveTo(s.child); err != nil {
		s.log.Warn("cannot give the terminal to the command", errorField(err))
	}
}
