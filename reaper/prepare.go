package reaper

import (
	"errors"
	"fmt"
	"io/fs"
	"syscall"
	"time"
)

// prepare does what comes before COMMAND starts: the instance's lock, the
// sweep of an earlier run's leftovers, the ports, the cgroup. It returns
// false and the exit code when reaper must not go on.
func (s *supervisor) prepare() (int, bool) {
	s.checkStopTimeout()
	s.instance = s.cfg.Instance
	named := s.instance != ""
	if !named {
		s.instance = uniqueInstance()
	}
	if named {
		lock, err := lockInstance(s.instance)
		var running *errInstanceRunning
		if errors.As(err, &running) && s.cfg.Replace {
			lock, err = replaceInstance(s.instance, running.pid, 2*s.cfg.Grace+killWait, s.log, s.stopRequested)
		}
		if s.stopped != 0 {
			return 128 + int(s.stopped), false
		}
		switch {
		case errors.As(err, &running):
			s.log.Error(err.Error())
			return ExitUsage, false
		case err != nil:
			s.log.Error("cannot lock the instance", stringField("instance", s.instance), errorField(err))
			return ExitInternal, false
		}
		s.lock = lock
	}
	var parentDir, parentPath string
	var cgErr error
	if s.cfg.Cgroup != CgroupOff {
		parentDir, parentPath, cgErr = ownCgroup(s.cgroupFiles)
	}
	if named {
		var stale *cgroup
		if cgErr == nil {
			stale, _ = openCgroup(parentDir, parentPath, leafName(s.instance))
		}
		s.sweep(stale)
	}
	if len(s.cfg.WaitPorts) > 0 {
		if err := s.waitPorts(s.marker()); err != nil && s.stopped == 0 {
			s.log.Error(err.Error())
			return ExitUsage, false
		}
	}
	if s.stopped != 0 {
		return 128 + int(s.stopped), false
	}
	if s.cfg.Cgroup != CgroupOff {
		if cgErr == nil {
			s.cg, cgErr = createCgroup(parentDir, parentPath, leafName(s.instance))
		}
		if cgErr != nil {
			return s.noCgroup(cgErr)
		}
	}
	return 0, true
}

// noCgroup reports a cgroup that could not be made: fatal with --cgroup=on,
// one info line with auto.
func (s *supervisor) noCgroup(err error) (int, bool) {
	if errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS) {
		err = fmt.Errorf("%w (the cgroup2 tree is not writable here: under systemd give the unit Delegate=yes; "+
			"in a container it is often read-only)", err)
	}
	if s.cfg.Cgroup == CgroupOn {
		s.log.Error("cannot contain COMMAND in a cgroup", errorField(err))
		return ExitInternal, false
	}
	s.log.Info("cgroup containment off: walking /proc instead", errorField(err))
	s.cg = nil
	return 0, true
}

// marker is the environment entry that marks this instance's processes.
func (s *supervisor) marker() []byte {
	return instanceMarker(s.instance)
}

// pause waits d, or less when a stop signal arrives before COMMAND exists:
// it then records the signal in s.stopped and returns true. Other signals
// have nobody to go to yet, and are dropped.
func (s *supervisor) pause(d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case <-timer.C:
			return false
		case sig := <-s.stops:
			s.earlyStop(sig.(syscall.Signal))
			return true
		case sig := <-s.sigs:
			s.earlySignal(sig.(syscall.Signal))
		}
	}
}

// stopRequested reports, without waiting, whether a stop signal arrived
// before COMMAND exists (see pause).
func (s *supervisor) stopRequested() bool {
	for {
		select {
		case sig := <-s.stops:
			s.earlyStop(sig.(syscall.Signal))
			return true
		case sig := <-s.sigs:
			s.earlySignal(sig.(syscall.Signal))
		default:
			return s.stopped != 0
		}
	}
}

// earlyStop records a stop signal that came before COMMAND started.
func (s *supervisor) earlyStop(sig syscall.Signal) {
	s.log.Info("stop signal before COMMAND started: not starting it", stringerField("signal", sigName(sig)))
	s.stopped = sig
}

// earlySignal drops any other signal that came before COMMAND started.
func (s *supervisor) earlySignal(sig syscall.Signal) {
	s.log.Debug("no COMMAND yet: not forwarded", stringerField("signal", sigName(sig)))
}

// sweep tears down what an earlier run of this instance left behind: the
// processes in its stale cgroup and those carrying its marker, found while
// no live reaper holds the instance. The policy is a stop's: the stop signal
// to all at once, one grace period, then SIGKILL (cgroup.kill for the
// cgroup), again until nothing is left.
func (s *supervisor) sweep(stale *cgroup) {
	began := time.Now()
	seen := map[int]bool{}
	signal := s.cfg.StopSignal
	// A few rounds: each finds what appeared since (a leftover that forked
	// while the previous round killed), and round one is the usual case.
	for round := 0; round < 5 && !s.stopRequested(); round++ {
		found := s.leftovers(stale, seen)
		if len(found) == 0 {
			break
		}
		fds := make([]int, 0, len(found))
		for _, h := range found {
			s.log.Warn("leftover of an earlier run", stringField("instance", s.instance), intField("pid", h.PID),
				stringField("command", h.cmdline), stringerField("signal", sigName(signal)))
			h.signal(signal)
			if h.State == 'T' && signal != syscall.SIGKILL {
				h.signal(syscall.SIGCONT)
			}
			fds = append(fds, h.fd)
		}
		if signal == syscall.SIGKILL || !pollExit(fds, began.Add(s.cfg.Grace), s.stopRequested) {
			if signal != syscall.SIGKILL {
				signal = syscall.SIGKILL // the grace period is over: for what is left, and what comes next
				if stale != nil {
					stale.kill()
				}
				for _, h := range found {
					if !h.exited() {
						s.log.Warn("killed leftover", intField("pid", h.PID), stringField("command", h.cmdline))
						h.signal(syscall.SIGKILL)
					}
				}
			}
			pollExit(fds, time.Now().Add(killWait), nil)
		}
		for _, h := range found {
			h.close()
		}
	}
	if stale != nil {
		if full, _ := stale.populated(); full {
			stale.kill()
			if empty, err := stale.watchEmpty(); err == nil {
				select {
				case <-empty:
				case <-time.After(killWait):
				}
			}
		}
		if err := stale.remove(); err != nil {
			s.log.Warn("cannot remove the cgroup of an earlier run", stringField("cgroup", stale.dir), errorField(err))
		}
	}
}

// leftovers returns the leftovers not seen yet: members of the stale
// cgroup, and processes carrying this instance's marker.
func (s *supervisor) leftovers(stale *cgroup, seen map[int]bool) []leftover {
	var found []leftover
	add := func(l leftover) {
		if seen[l.PID] {
			l.close()
			return
		}
		seen[l.PID] = true
		found = append(found, l)
	}
	if stale != nil {
		pids, _ := stale.procs()
		for _, pid := range pids {
			if h, err := openMember(stale, pid, s.self); err == nil && h.fd >= 0 {
				add(leftover{handle: h, cmdline: commandLine(pid)})
			}
		}
	}
	for _, l := range findMarked(s.marker(), s.self) {
		add(l)
	}
	return found
}
