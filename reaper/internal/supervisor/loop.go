package supervisor

import (
	"errors"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/reaper-init/reaper/reaper/exitcode"
	"github.com/reaper-init/reaper/reaper/logs"
	"github.com/reaper-init/reaper/reaper/procfs"
	"github.com/reaper-init/reaper/reaper/stop"
)

// loop handles events until the stop machine is done: nothing is left
// below reaper, or reaper gave up on what is. It then gives the terminal
// back.
func (s *supervisor) loop() {
	for s.stop.machine.Phase() != stop.Done {
		s.step()
	}
	s.stop.timers.stopAll()
	if s.tty != nil {
		s.tty.restore()
	}
}

// step waits for one event and handles it.
func (s *supervisor) step() {
	select {
	case <-s.caught.chld:
		s.reap()
	case sig := <-s.caught.stops:
		if s.caught.isStop(sig.(syscall.Signal)) { // else it came on sigs too, to be forwarded
			s.onStopRequest(sig.(syscall.Signal))
		}
	case sig := <-s.forwarder.loop:
		s.forwarder.onSignal(sig)
		s.forwarder.pending.Add(-1) // after: a signal behind it must not overtake it
	case tokens := <-s.stop.exits.c():
		s.stop.exits.noteExits(s.stop.record, tokens, time.Now())
	case <-s.stop.timers.graceC:
		s.stop.timers.graceC = nil
		s.log.Info("grace period over", logs.Duration("grace", s.stop.timers.graceFor))
		s.feed(stop.GraceExpired)
	case <-s.stop.timers.othersC:
		s.stop.timers.othersC = nil
		s.feed(stop.OthersDue)
	case <-s.stop.timers.timeoutC:
		s.stop.timers.timeoutC = nil
		if !s.stop.machine.Stopping() {
			s.log.Warn("timeout expired: stopping everything", logs.Duration("timeout", s.cfg.Timeout))
		}
		s.feed(stop.TimeoutExpired)
	case <-s.stop.timers.killC:
		s.stop.timers.killC = nil
		s.feed(stop.KillWaitExpired)
	case <-s.stop.emptied:
		s.stop.emptied = nil // what is left, if anything, left the leaf: walk /proc for it
		s.stop.walkDue = s.stop.record != nil
	}
	s.advance()
}

// advance tells the stop machine what the event changed: the tree is
// empty, or everything the stop signalled is gone while something is left.
func (s *supervisor) advance() {
	machine := s.stop.machine
	if !machine.Stopping() && machine.Phase() != stop.Draining {
		return
	}
	if s.cmd.reaped && s.tree.Done(s.noChildren()) {
		s.feed(stop.TreeEmpty)
		return
	}
	if s.wentQuiet() {
		s.feed(stop.Quiet)
	}
}

// wentQuiet reports, once, that every process the stop tracks has exited
// since the last walk, or that the tree asked for a walk. If reaper still
// has children then, they are processes the last walk did not see. Without
// an exit watcher it cannot tell, and always says so.
func (s *supervisor) wentQuiet() bool {
	if s.stop.record == nil {
		return false
	}
	due := s.stop.walkDue
	s.stop.walkDue = false
	return s.stop.record.TakeQuiet() || due || s.stop.exits.broken
}

// feed hands an event to the stop machine, carries out its actions and
// returns them.
func (s *supervisor) feed(ev stop.Event) []stop.Action {
	actions := s.stop.machine.Handle(ev)
	for _, action := range actions {
		switch action {
		case stop.SignalTree:
			s.signalTree()
		case stop.SignalCommand:
			s.signalCommand()
		case stop.SignalOthers:
			s.signalOthers()
		case stop.SignalMissed:
			s.signalMissed()
		case stop.ArmGrace:
			s.stop.timers.armGrace(s.stop.machine.DeadlineAfter(), s.stop.record.Began)
		case stop.ArmLeftovers:
			s.stop.timers.armSooner(s.stop.machine.LeftoversGrace(), time.Now())
		case stop.ArmOthers:
			s.stop.timers.armOthers(s.stop.machine.OthersAfter(), s.stop.record.Began)
		case stop.ArmKillWait:
			s.stop.timers.armKillWait()
		case stop.KillTree:
			s.killTree()
		case stop.GiveUp:
			s.giveUp()
		case stop.Finish:
			s.finishRecord(false)
		}
	}
	return actions
}

// reap drains wait4 until no exited child is left, and tells the stop
// machine when COMMAND was among the reaped. It is the only caller of
// wait4.
func (s *supervisor) reap() {
	exited := s.reapAll()
	if !exited {
		return
	}
	s.log.Info("command exited", logs.Int("pid", s.cmd.pid), logs.String("status", exitcode.Describe(s.cmd.status)))
	if s.tree.Done(s.noChildren()) {
		s.feed(stop.CommandExitLast)
	} else {
		s.feed(stop.CommandExit)
	}
}

// reapAll drains wait4 and reports whether COMMAND was reaped.
func (s *supervisor) reapAll() (commandExited bool) {
	s.cmd.mu.Lock()
	defer s.cmd.mu.Unlock()
	for {
		var status unix.WaitStatus
		pid, err := unix.Wait4(-1, &status, unix.WNOHANG|unix.WUNTRACED|unix.WCONTINUED, nil)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.ECHILD):
			s.children.none, s.children.guardianOnly = true, false
			return commandExited
		case err != nil:
			s.log.Error("wait4 failed", logs.Err(err))
			return commandExited
		case pid == 0:
			s.children.none = false
			s.children.guardianOnly = s.held.guardian != nil && !s.held.guardian.Lost()
			return commandExited
		case s.held.guardian != nil && pid == s.held.guardian.PID():
			s.log.Warn("the guardian exited before the run's end: should reaper die now, what the run left will not be stopped",
				logs.String("status", exitcode.Describe(status)))
			s.held.guardian.Reaped()
			continue
		case exitcode.Stopped(status):
			s.children.stopped[pid] = true
			if pid == s.cmd.pid {
				s.forwarder.onCommandStopped(status.StopSignal(), s.stop.machine.Phase() == stop.Running)
			}
			continue
		case status.Continued():
			delete(s.children.stopped, pid)
			continue
		}
		delete(s.children.stopped, pid)
		if s.log.DebugEnabled() {
			s.log.Debug("reaped", logs.Int("pid", pid), logs.String("status", exitcode.Describe(status)))
		}
		if s.stop.record != nil {
			s.stop.record.NoteReaped(pid, time.Now())
		}
		if pid == s.cmd.pid && !s.cmd.reaped {
			s.cmd.reaped, s.cmd.status, commandExited = true, status, true
		}
	}
}

// noChildren reports whether nothing is left below reaper: wait4 said
// ECHILD, or, while the guardian lives (a child of reaper's that is no
// descendant of COMMAND's), the kernel's lists of reaper's children hold
// the guardian alone, so that no other descendant can exist.
func (s *supervisor) noChildren() bool {
	if s.children.none || !s.children.guardianOnly {
		return s.children.none
	}
	kids := procfs.Children(s.self.pid, s.self.threads)
	return len(kids) == 1 && kids[0] == s.held.guardian.PID()
}

// onStopRequest handles a stop request: before a stop, it begins one (the
// request is forwarded there, after the walk); during one, a second
// request ends the grace period.
func (s *supervisor) onStopRequest(sig syscall.Signal) {
	s.stop.request = sig
	during := s.stop.machine.Phase() == stop.Stopping
	actions := s.feed(stop.StopRequest)
	switch {
	case during && len(actions) > 0:
		s.log.Info("second stop signal: killing now", logs.Signal("signal", sig))
	case during:
		// The stop began without a signal (COMMAND exited, or --timeout):
		// everyone already got the stop signal, and the deadline stands.
		s.log.Info("stop already under way", logs.Signal("signal", sig))
	}
}

// exitCode is COMMAND's status as a shell reports it (0 for codes listed in
// --success-exit), exitcode.Timeout when --timeout fired, exitcode.Internal
// when COMMAND outlived SIGKILL, exitcode.Leftovers when COMMAND exited 0
// but left processes and --leftovers=fail says that fails the run.
func (s *supervisor) exitCode() int {
	switch {
	case s.stop.machine.TimedOut():
		return exitcode.Timeout
	case s.cmd.lost:
		return exitcode.Internal
	}
	code := exitcode.Of(s.cmd.status)
	for _, ok := range s.cfg.SuccessExit {
		if code == ok {
			code = 0
			break
		}
	}
	if left := s.leftBehind(); code == 0 && len(left) > 0 && s.cfg.Leftovers == LeftoversFail {
		s.log.Error("COMMAND exited 0 but left processes that had to be stopped (--leftovers=fail)",
			logs.Int("processes", len(left)), logs.Ints("pids", left))
		return exitcode.Leftovers
	}
	return code
}

// leftBehind returns the pids of the processes COMMAND left when it exited
// on its own, which the stop then had to stop.
func (s *supervisor) leftBehind() []int {
	if s.stop.record == nil || s.stop.record.Reason != stop.CommandExited {
		return nil
	}
	pids := make([]int, len(s.stop.record.Processes))
	for i, p := range s.stop.record.Processes {
		pids[i] = p.Handle.PID
	}
	return pids
}

// stopDeadline is the deadline of the stop under way: from its start, or,
// for a stop request without one, the grace period of what is left once
// COMMAND has exited.
func (s *supervisor) stopDeadline() time.Duration {
	if s.stop.machine.Reason() == stop.Requested && s.stop.budget.NoDeadline {
		return s.stop.machine.LeftoversGrace()
	}
	return s.stop.machine.DeadlineAfter()
}

// armGrace arms the deadline d after from (the start of the stop, not the
// end of its walk).
func (t *timers) armGrace(d time.Duration, from time.Time) {
	if t.grace != nil {
		t.grace.Stop()
	}
	t.grace, t.graceAt, t.graceFor = time.NewTimer(max(d-time.Since(from), 0)), from.Add(d), d
	t.graceC = t.grace.C
}

// armSooner arms the deadline d after from, unless the one armed comes
// sooner.
func (t *timers) armSooner(d time.Duration, from time.Time) {
	if t.graceC == nil || from.Add(d).Before(t.graceAt) {
		t.armGrace(d, from)
	}
}

// armOthers arms the time the others get the stop signal, d after the
// start of the stop.
func (t *timers) armOthers(d time.Duration, began time.Time) {
	t.others = time.NewTimer(max(d-time.Since(began), 0))
	t.othersC = t.others.C
}

// armKillWait disarms the grace deadline and the others' time, and arms
// the kill wait.
func (t *timers) armKillWait() {
	for _, timer := range []*time.Timer{t.grace, t.others} {
		if timer != nil {
			timer.Stop()
		}
	}
	t.graceC, t.othersC = nil, nil
	t.kill = time.NewTimer(killWait)
	t.killC = t.kill.C
}

// stopAll stops every timer.
func (t *timers) stopAll() {
	for _, timer := range []*time.Timer{t.grace, t.others, t.timeout, t.kill} {
		if timer != nil {
			timer.Stop()
		}
	}
	t.graceC, t.othersC, t.timeoutC, t.killC = nil, nil, nil, nil
}
