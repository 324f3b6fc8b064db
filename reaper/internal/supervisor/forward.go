package supervisor

import (
	"os"
	"sync/atomic"
	"syscall"

	"github.com/reaper-init/reaper/reaper/handle"
	"github.com/reaper-init/reaper/reaper/logs"
	"github.com/reaper-init/reaper/reaper/procfs"
	"github.com/reaper-init/reaper/reaper/tree"
	"github.com/reaper-init/reaper/signals"
	"go.uber.org/zap/zapcore"
)

// forwarder passes the signals reaper receives on to COMMAND's process
// group or to COMMAND alone, after rewrites, and follows COMMAND through
// job control on a terminal.
type forwarder struct {
	policy signals.Policy
	log    *logs.Logger
	cmd    *command
	tree   tree.Tree
	tty    *terminal
	self   int
	// procIsOurs is false when /proc shows another PID namespace: nothing
	// read there is about reaper's processes.
	procIsOurs bool
	loop       chan syscall.Signal // to the event loop, which reads it
	// pending counts the signals handed to the event loop and not handled
	// there yet: while any is, later ones go the same way, in order.
	pending atomic.Int32
}

// fastForward reads the caught signals other than the stop requests (which
// the event loop reads from a channel of their own) once COMMAND runs. An
// ordinary signal it forwards itself, from the goroutine os/signal wakes:
// handing it to the event loop first would cost a wake-up of the loop's
// locked thread, a good part of the forwarding latency. Whatever needs the
// loop (SIGCONT and the terminal, a COMMAND already reaped, debug logs,
// errors) goes there, and so does every signal behind one still waiting
// there, so that none of these overtakes another. Stop requests are not
// ordered against them, in either direction.
func (f *forwarder) fastForward(sigs <-chan os.Signal) {
	for v := range sigs {
		sig := v.(syscall.Signal)
		if f.policy.IsStop(sig) {
			continue // it came on the stop requests' channel too: the event loop has it
		}
		if f.pending.Load() == 0 && f.forwardNow(sig) {
			continue
		}
		f.pending.Add(1)
		f.loop <- sig
	}
}

// forwardNow forwards sig when that takes nothing but a kill(2), and
// reports whether it did. It holds cmd.mu: COMMAND's pid and group id are
// reserved until COMMAND is reaped, and reaping waits for the lock.
func (f *forwarder) forwardNow(sig syscall.Signal) bool {
	if f.log.DebugEnabled() || sig == syscall.SIGCONT {
		return false
	}
	out, ok := f.policy.Forward(sig)
	if !ok {
		return true // dropped
	}
	f.cmd.mu.Lock()
	defer f.cmd.mu.Unlock()
	if f.cmd.reaped {
		return false
	}
	return f.killCommand(out, f.policy.Target) == nil // on failure the loop tries again, and says why
}

// killCommand sends sig to COMMAND's group, or to COMMAND alone. COMMAND
// must not be reaped yet: its pid and group id are reserved until then.
func (f *forwarder) killCommand(sig syscall.Signal, target signals.Target) error {
	if target == signals.Group {
		return syscall.Kill(-f.cmd.pid, sig)
	}
	return syscall.Kill(f.cmd.pid, sig)
}

// onSignal handles, on the event loop, a caught signal other than a stop
// request or SIGCHLD.
func (f *forwarder) onSignal(sig syscall.Signal) {
	if sig == syscall.SIGCONT {
		f.onContinued()
	}
	f.forward(sig)
}

// forward passes a received signal on, after rewrites, to COMMAND's group or
// to COMMAND alone, as the policy says for it, and returns the signal it
// sent (0 if none). COMMAND's
// pid and group id stay reserved until reaper reaps it, so kill(2) is safe
// until then; afterwards the group's remaining members are signalled one by
// one through their handles. It runs on the event loop, which reaps: no
// lock needed.
func (f *forwarder) forward(sig syscall.Signal) syscall.Signal {
	out, ok := f.policy.Forward(sig)
	if !ok {
		f.log.Debug("dropped", logs.Signal("signal", sig))
		return 0
	}
	target := f.policy.Target
	var err error
	reached := 1
	switch {
	case !f.cmd.reaped:
		err = f.killCommand(out, target)
	case target == signals.Group:
		reached = f.signalGroupMembers(out)
	default:
		reached = 0
	}
	if err != nil {
		f.log.Warn("cannot forward signal", logs.Signal("signal", out), logs.Err(err))
		return 0
	}
	if f.log.DebugEnabled() {
		fields := []zapcore.Field{logs.Signal("received", sig), logs.Signal("signal", out),
			logs.String("to", target.String()), logs.Int("pgid", f.cmd.pid)}
		if f.cmd.reaped || target != signals.Group {
			fields = append(fields, logs.Int("processes", reached)) // kill(-pgid) says not how many
		}
		f.log.Debug("forwarded", fields...)
	}
	return out
}

// signalGroupMembers signals the descendants still in COMMAND's process group
// after COMMAND itself is gone, and returns how many it reached.
func (f *forwarder) signalGroupMembers(sig syscall.Signal) int {
	n := 0
	f.tree.Walk(func(h *handle.Handle) {
		if f.reaches(h, signals.Group) && h.Signal(sig) == nil {
			n++
		}
		h.Close()
	})
	return n
}

// reaches reports whether a signal forwarded to target goes to h's
// process: a member of COMMAND's process group, or COMMAND alone.
func (f *forwarder) reaches(h *handle.Handle, target signals.Target) bool {
	if target == signals.Group {
		pgid, err := h.PGID()
		return err == nil && pgid == f.cmd.pid
	}
	return !h.IsGroup() && h.PID == f.cmd.pid && !f.cmd.reaped
}

// onCommandStopped follows COMMAND into a job-control stop (Ctrl-Z, SIGTSTP,
// SIGTTIN, SIGTTOU) on a terminal: reaper gives the terminal back to its own
// group and stops that group, so that the shell that started the job sees
// it stop and shows its prompt. Without a terminal there is no job control:
// COMMAND just stays stopped until someone continues it. It runs on the
// event loop, from the reaping, and must not take cmd.mu.
func (f *forwarder) onCommandStopped(sig syscall.Signal, running bool) {
	f.log.Info("command stopped", logs.Int("pid", f.cmd.pid), logs.Signal("signal", sig))
	if f.tty == nil || !running {
		return
	}
	if f.self == 1 || f.procIsOurs && groupOrphaned(f.self) {
		// Nobody would ever continue reaper: PID 1 cannot stop itself, and
		// an orphaned process group (reaper as a session leader: docker
		// exec -it, ssh -t host reaper -- vim, a tmux pane) has no shell
		// to send it SIGCONT. A stop would freeze the terminal for good,
		// so reaper does what a shell does there: it continues COMMAND.
		f.log.Info("nobody could continue reaper (PID 1, or an orphaned process group): continuing the command")
		syscall.Kill(-f.cmd.pid, syscall.SIGCONT)
		return
	}
	if f.tty.foreground() == f.cmd.pid {
		f.tty.giveTo(f.tty.pgrp)
	}
	// The whole job stops, not reaper alone: a script that runs reaper
	// (sh -c 'reaper ...; echo') must stop too for its shell to see the
	// job stop.
	syscall.Kill(-f.tty.pgrp, syscall.SIGSTOP)
}

// onContinued hands the terminal to COMMAND's group again when reaper was
// continued in the foreground (the shell's fg); in the background (bg) it
// stays with the shell. forward then passes the SIGCONT on.
func (f *forwarder) onContinued() {
	if f.tty == nil || f.cmd.reaped || f.tty.foreground() != f.tty.pgrp {
		return
	}
	if err := f.tty.giveTo(f.cmd.pid); err != nil {
		f.log.Warn("cannot give the terminal to the command", logs.Err(err))
	}
}

// groupOrphaned reports whether the process group of process self is
// orphaned, as POSIX means it: no member has a parent in the same session
// but in another group, the job-control shell that could continue it. It
// looks at self's ancestors: the first one outside self's group decides (a
// parent outside the session, or outside the PID namespace, as for a
// session leader, means orphaned).
func groupOrphaned(self int) bool {
	me, err := procfs.Stat(self)
	if err != nil {
		return false
	}
	orphaned := true
	err = procfs.WalkUp(me.PPID, func(p procfs.Process) bool {
		if p.PGID == me.PGID {
			return true
		}
		orphaned = p.Session != me.Session
		return false
	})
	return err == nil && orphaned
}
