package reaper

import (
	"syscall"
	"time"

	"github.com/reaper-init/reaper/signals"
)

// beginStop sends the stop signal to every descendant at once and starts the
// one grace deadline of this stop. A stop that begins with a signal forwards
// that signal as usual, and the processes it reaches get nothing more.
//
// The walk and the pidfds come first, the signals after: once a signal is
// out, processes exit, their orphans move up to reaper while a walk could
// miss them, and a process that is already gone cannot be tracked.
func (s *supervisor) beginStop(reason stopReason, received syscall.Signal) {
	s.phase = stopping
	s.stop = newTeardown(reason, received, s.cfg.StopSignal, time.Now(), s.log)
	tracked := s.stop.trackAll(s.descendants(), s.self)
	var forwarded syscall.Signal
	if reason == reasonSignal {
		s.stop.stopSignals = 1
		forwarded = s.forward(received)
	}
	for _, t := range tracked {
		if forwarded != 0 && s.reachedByForward(t.h.process) {
			t.signal = forwarded
		} else {
			s.stop.send(t, s.cfg.StopSignal)
		}
		if t.h.State == 'T' {
			s.stop.send(t, syscall.SIGCONT) // a stopped process acts on nothing until continued
		}
	}
	if !s.walkable && !s.childGone && forwarded == 0 {
		s.signalGroupBlind(s.cfg.StopSignal)
	}
	s.log.Info("stopping", stringField("reason", reason.String()), intField("descendants", len(tracked)),
		durationField("grace", s.cfg.Grace))
	if s.cfg.Grace <= 0 {
		s.killAll()
		return
	}
	s.graceTimer = time.NewTimer(s.cfg.Grace)
	s.graceC = s.graceTimer.C
}

// reachedByForward reports whether a forwarded signal went to p.
func (s *supervisor) reachedByForward(p process) bool {
	if s.cfg.Policy.Target == signals.Group {
		return p.PGID == s.child
	}
	return p.PID == s.child && !s.childGone
}

// signalMissed sends the stop signal to descendants the stop has not tracked
// yet and that were already running when it began.
func (s *supervisor) signalMissed() {
	for _, p := range s.descendants() {
		if s.stop.byPID[p.PID] == nil && s.stop.predates(p) {
			if t := s.stop.track(p, s.self); t != nil {
				s.stop.send(t, s.cfg.StopSignal)
			}
		}
	}
}

// killAll ends the grace period: SIGKILL to every descendant, then again to
// each one that appears, until nothing is left.
func (s *supervisor) killAll() {
	if s.graceTimer != nil {
		s.graceTimer.Stop()
		s.graceC = nil
	}
	s.phase = killing
	s.killTimer = time.NewTimer(killWait)
	s.killC = s.killTimer.C
	s.killStragglers()
}

// killStragglers walks the tree and SIGKILLs every process not killed yet.
func (s *supervisor) killStragglers() {
	if !s.walkable {
		if !s.childGone {
			s.signalGroupBlind(syscall.SIGKILL)
		}
		if s.self == 1 {
			s.finish() // the kernel kills what is left when PID 1 exits
		}
		return
	}
	for _, p := range s.descendants() {
		s.stop.kill(p, s.self)
	}
}

// signalGroupBlind signals COMMAND's group with kill(2), the one thing reaper
// can still do safely when it cannot see its descendants.
func (s *supervisor) signalGroupBlind(sig syscall.Signal) {
	if err := syscall.Kill(-s.child, sig); err != nil {
		s.log.Warn("cannot signal COMMAND's process group", stringerField("signal", sigName(sig)), errorField(err))
	}
}

// giveUp is called when SIGKILLed processes did not go within killWait.
func (s *supervisor) giveUp() {
	var pids []int
	for _, p := range s.descendants() {
		pids = append(pids, p.PID)
	}
	s.log.Error("processes still run after SIGKILL (uninterruptible sleep, or not reaper's to signal); giving up on them",
		intsField("pids", pids), durationField("waited", killWait))
	if !s.childGone {
		s.lostChild = true
	}
	s.finish()
}

// finish ends the run once nothing is left below reaper.
func (s *supervisor) finish() {
	s.phase = done
	for _, t := range []*time.Timer{s.graceTimer, s.timeoutTimer, s.killTimer} {
		if t != nil {
			t.Stop()
		}
	}
	if s.stop != nil {
		s.stop.finish(time.Now())
	}
}

// descendants walks reaper's tree; it returns nothing when /proc cannot be
// trusted.
func (s *supervisor) descendants() []process {
	if !s.walkable {
		return nil
	}
	procs, err := descendants(s.self, s.threads)
	if err != nil {
		s.log.Error("cannot list descendants", errorField(err))
	}
	return procs
}
