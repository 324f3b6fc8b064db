package reaper

import (
	"errors"
	"io/fs"
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
// miss them, and a process that is already gone cannot be tracked. When
// COMMAND exited (or --timeout fired) each process is signalled as soon as
// the walk has it, so that its exit overlaps the rest of the walk, and in
// cgroup mode reaper's own children are not looked up in /proc at all (see
// walkLazily). When a
// signal began the stop, COMMAND gets it first, as it would without reaper,
// and everything else after: a COMMAND that waits for its children must
// learn why they die before they do (a shell would report the child's
// SIGTERM instead of running its own trap).
func (s *supervisor) beginStop(reason stopReason, received syscall.Signal) {
	s.phase = stopping
	s.watchCgroup()
	s.stop = newTeardown(reason, received, s.cfg.StopSignal, time.Now(), s.log)
	// Killed processes are named by their command lines; with no grace,
	// all of them are, and the SIGTERM just sent may have ended one before
	// its command line could be read.
	s.stop.wantCommands = s.cfg.ReportPath != "" || s.cfg.Grace <= 0
	var reached, rest []*tracked // when a signal began the stop: signalled after the walk
	walk := s.walkLazily
	if reason == reasonSignal {
		walk = s.walk // reachedByForward needs every process group: no lazy handles
	}
	walk(func(h *handle) {
		t := s.stop.track(h)
		switch {
		case reason != reasonSignal:
			s.askToStop(t, s.cfg.StopSignal)
		case s.reachedByForward(h.process):
			reached = append(reached, t)
		default:
			rest = append(rest, t)
		}
	})
	var forwarded syscall.Signal
	if reason == reasonSignal {
		forwarded = s.forward(received)
		for _, t := range reached {
			if forwarded != 0 {
				t.signal = forwarded
				s.continueStopped(t)
			} else {
				s.askToStop(t, s.cfg.StopSignal)
			}
		}
		for _, t := range rest {
			s.askToStop(t, s.cfg.StopSignal)
		}
	}
	// Blind, the group is all reaper can stop; a forward reached all of it
	// only in group mode (in child mode COMMAND gets both).
	if !s.walkable && !s.childGone && (forwarded == 0 || s.cfg.Policy.Target != signals.Group) {
		s.signalGroupBlind(s.cfg.StopSignal)
	}
	s.log.Info("stopping", stringField("reason", reason.String()), intField("descendants", len(s.stop.procs)),
		durationField("grace", s.cfg.Grace))
	// The deadline counts from the start of the stop, not from the end of
	// this walk.
	left := s.cfg.Grace - time.Since(s.stop.began)
	if s.cfg.Grace <= 0 || left <= 0 {
		s.killAll()
		return
	}
	s.graceTimer = time.NewTimer(left)
	s.graceC = s.graceTimer.C
}

// askToStop sends sig to a tracked process, and SIGCONT after it when the
// process is stopped.
func (s *supervisor) askToStop(t *tracked, sig syscall.Signal) {
	s.stop.send(t, sig)
	s.continueStopped(t)
}

// continueStopped sends SIGCONT to a tracked process the walk found stopped:
// it acts on nothing until continued.
func (s *supervisor) continueStopped(t *tracked) {
	if t.h.State == 'T' {
		s.stop.send(t, syscall.SIGCONT)
	}
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
	s.walk(func(h *handle) {
		if s.stop.byPID[h.PID] != nil || !s.stop.predates(h.process) {
			h.close()
			return
		}
		s.askToStop(s.stop.track(h), s.cfg.StopSignal)
	})
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
// With a cgroup, cgroup.kill does it at once, forks racing it included; the
// walk before it only names the processes for the report.
func (s *supervisor) killStragglers() {
	if s.cg != nil && !s.cgDone {
		var victims []*tracked
		s.walk(func(h *handle) {
			if t := s.stop.track(h); !t.killed && t.exitedAt.IsZero() {
				t.refreshCommand()
				victims = append(victims, t)
			}
		})
		if err := s.cg.kill(); err == nil {
			s.stop.killedAll(victims)
			return
		} else if !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("cgroup.kill failed: killing one by one", errorField(err))
		}
		// No cgroup.kill before Linux 5.14: one by one, below.
	}
	if !s.walkable {
		if !s.childGone {
			s.signalGroupBlind(syscall.SIGKILL)
		}
		if s.self == 1 {
			s.finish() // the kernel kills what is left when PID 1 exits
		}
		return
	}
	s.walk(s.stop.kill)
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
	s.walk(func(h *handle) {
		pids = append(pids, h.PID)
		h.close()
	})
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

// walk visits reaper's descendants: the members of its cgroup when it has
// one (and the cgroup still holds any), its tree in /proc otherwise (see
// walk); nothing when /proc cannot be trusted.
func (s *supervisor) walk(visit func(*handle)) {
	s.walkWith(false, visit)
}

// walkLazily is walk, with lazy handles (see openChild) on reaper's own
// children where the cgroup lists the descendants: what the first signal
// of a stop needs, without reading /proc for each child. Their handles know
// no process group, start time or thread count.
func (s *supervisor) walkLazily(visit func(*handle)) {
	s.walkWith(true, visit)
}

// walkWith is walk, with lazy handles on reaper's children when lazy is set
// and the cgroup lists the descendants.
func (s *supervisor) walkWith(lazy bool, visit func(*handle)) {
	if !s.walkable {
		return
	}
	if s.cg == nil || s.cgDone {
		hidden, err := walk(s.self, s.threads, visit)
		if err != nil {
			s.log.Error("cannot list descendants", errorField(err))
		}
		s.reportHidden(hidden)
		return
	}
	pids, err := s.cg.procs()
	if err != nil {
		s.log.Error("cannot list the cgroup's processes", errorField(err))
	}
	for _, pid := range pids {
		if lazy {
			if h, ok := openChild(pid, s.self, s.childStopped[pid]); ok {
				visit(h)
				continue
			}
		}
		if h, err := openMember(s.cg, pid, s.self); err == nil {
			visit(h)
		}
	}
}

// reportHidden warns, once for each, of descendants /proc does not show,
// which reaper therefore cannot signal.
func (s *supervisor) reportHidden(pids []int) {
	for _, pid := range pids {
		if s.hidden[pid] {
			continue
		}
		if s.hidden == nil {
			s.hidden = map[int]bool{}
		}
		s.hidden[pid] = true
		s.log.Warn("cannot see a descendant (/proc hides it: hidepid, or another user's process): not signalled", intField("pid", pid))
	}
}

// watchCgroup starts watching the cgroup for the moment it empties.
func (s *supervisor) watchCgroup() {
	if s.cg == nil || s.cgEmpty != nil || s.cgDone {
		return
	}
	empty, err := s.cg.watchEmpty()
	if err != nil {
		s.log.Warn("cannot watch the cgroup: relying on wait4 alone", errorField(err))
		s.cgDone = true
		return
	}
	s.cgEmpty = empty
}
