package supervisor

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/reaper-init/reaper/reaper/cgroup"
	"github.com/reaper-init/reaper/reaper/exitcode"
	"github.com/reaper-init/reaper/reaper/guardian"
	"github.com/reaper-init/reaper/reaper/instance"
	"github.com/reaper-init/reaper/reaper/logs"
	"github.com/reaper-init/reaper/reaper/ports"
	"github.com/reaper-init/reaper/reaper/procfs"
	"github.com/reaper-init/reaper/reaper/stop"
	"github.com/reaper-init/reaper/reaper/systemd"
)

// setUp does what must come first: the files every part reads, the spare
// threads, the logger, and the signals routed as the policy says. It
// returns false when the log format is unknown.
func (s *supervisor) setUp() bool {
	s.self.files = cgroup.ReadFiles()
	spares, room := plannedSpares(s.self.files)
	s.self.spares = reserveThreads(spares)
	log, err := logs.New(s.cfg.Stderr, s.cfg.LogFormat, s.cfg.Verbosity)
	if err != nil {
		fmt.Fprintf(s.cfg.Stderr, "reaper: %v\n", err)
		return false
	}
	s.log, s.caught.log = log, log
	if room >= 0 && spares < spareThreads {
		log.Warn("pids.max leaves little room: fewer spare threads, so a tree that fills it may crash reaper",
			logs.Int("room", room), logs.Int("spare_threads", spares))
	}
	<-s.caught.fatalCaught // until then a SIGTERM would end reaper: before it has changed anything
	s.caught.route(s.cfg.Policy)
	for _, sig := range s.caught.ignored {
		log.Debug("inherited as ignored: caught and forwarded, ignored by COMMAND when it starts", logs.Signal("signal", sig))
	}
	return true
}

// launchGuardian starts the run's guardian (see package guardian), unless
// reaper is PID 1 (whose death ends its namespace), /proc is another PID
// namespace's, or --guardian=off.
func (s *supervisor) launchGuardian() {
	if s.cfg.Guardian == GuardianOff || s.self.pid == 1 || !s.self.ownProc {
		return // a foreign /proc would show the guardian nothing of the run
	}
	g, err := guardian.Launch()
	if err != nil {
		s.log.Warn("no guardian: should reaper die, what the run left will not be stopped", logs.Err(err))
		return
	}
	s.held.guardian = g
}

// becomeSubreaper makes orphaned descendants reparent to reaper instead of
// to init. PID 1 of a namespace is their reaper already.
func (s *supervisor) becomeSubreaper() {
	if s.self.pid == 1 {
		return
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		s.log.Warn("cannot become a child subreaper: orphans will escape to init", logs.Err(err))
	}
}

// procIsOurs reports whether /proc shows the PID namespace of process self
// (as it does unless a namespace was made without mounting a /proc of its
// own): every pid read there must mean what it means to reaper's system
// calls.
func procIsOurs(self int, log *logs.Logger) bool {
	link, err := os.Readlink(procfs.Root + "/self")
	if err == nil && link == strconv.Itoa(self) {
		return true
	}
	log.Warn("/proc belongs to another PID namespace (mount a /proc of its own, e.g. unshare --mount-proc): "+
		"reaper cannot see its descendants and stops only COMMAND's process group", logs.String("self", link))
	return false
}

// prepare does what comes before COMMAND starts: the instance's lock, the
// sweep of an earlier run's leftovers, the ports, the cgroup. It returns
// false and the exit code when reaper must not go on (and has released
// what it took).
func (s *supervisor) prepare() (int, bool) {
	unit, inUnit := systemd.Find(s.self.files, s.log)
	s.stop.budget = s.chooseBudget(unit, inUnit)
	s.held.instance = s.cfg.Instance
	named := s.held.instance != ""
	if !named {
		s.held.instance = instance.Unique()
		s.held.marker = s.held.instance
	}
	if named {
		if code, ok := s.takeLock(); !ok {
			return code, false
		}
		s.held.marker = instance.Value(s.held.instance, s.held.lock.Token)
	}
	var parentDir, parentPath string
	var cgErr error
	if s.cfg.Cgroup != CgroupOff {
		_, parentDir, parentPath, cgErr = s.self.files.Group("")
		if cgErr == nil && inUnit && !unit.Delegated {
			// systemd owns a unit's cgroup subtree unless the unit
			// delegates it: nobody else may make or move anything there.
			cgErr = fmt.Errorf("the systemd unit %s does not delegate its cgroup (Delegate=yes)", unit.Name)
		}
	}
	var previous [][]byte // the earlier runs' markers: their leftovers carry them
	if named {
		sweep := s.newSweep()
		sweep.Previous, sweep.Stop = s.held.lock.Previous, s.caught.stopRequested
		if cgErr == nil {
			sweep.Stale = s.held.lock.StaleLeaves(parentDir, parentPath)
		}
		if !s.self.ownProc {
			sweep.Blind = true
			s.log.Warn("/proc belongs to another PID namespace: only the earlier run's cgroup is swept, if any",
				logs.String("instance", s.held.instance))
		}
		if sweep.Run() && s.self.ownProc {
			if err := s.held.lock.Swept(); err != nil {
				s.log.Warn("cannot record the sweep: the next run sweeps again", logs.Err(err))
			}
		}
		previous = sweep.Markers()
	}
	if len(s.cfg.WaitPorts) > 0 && s.caught.early == 0 {
		err := ports.Wait(s.cfg.WaitPorts, s.cfg.WaitPortTimeout, previous, s.log, s.caught.pause)
		if err != nil && s.caught.early == 0 {
			s.log.Error(err.Error())
			s.cleanUp()
			return exitcode.Usage, false
		}
	}
	if s.caught.early != 0 {
		s.cleanUp()
		return 128 + int(s.caught.early), false
	}
	if s.cfg.Cgroup != CgroupOff {
		switch {
		case cgErr == nil && named:
			s.held.leaf, cgErr = s.held.lock.NewLeaf(parentDir, parentPath, s.log)
		case cgErr == nil:
			s.held.leaf, cgErr = cgroup.Create(parentDir, parentPath, instance.LeafName(s.held.instance))
		}
		if cgErr != nil {
			code, ok := s.noCgroup(cgErr)
			if !ok {
				s.cleanUp()
			}
			return code, ok
		}
	}
	return 0, true
}

// chooseBudget decides how long a stop may take (see stop.Budget): as
// --grace says, or as long as whoever stops reaper allows: the stop
// timeout of the systemd service reaper runs in, or the container engine
// whose SIGKILL ends the namespace of a PID 1.
func (s *supervisor) chooseBudget(unit systemd.Unit, inUnit bool) stop.Budget {
	service := inUnit && unit.Service && unit.TimeoutKnown
	var b stop.Budget
	switch {
	case s.cfg.Grace >= 0:
		b = stop.Fixed(s.cfg.Grace)
		if service && unit.StopTimeout > 0 && s.cfg.Grace > 0 && s.cfg.Grace >= unit.StopTimeout {
			s.log.Warn("the grace period is not below the unit's stop timeout: systemd will SIGKILL reaper before its teardown ends "+
				"(give the unit a larger TimeoutStopSec=, or reaper a smaller --grace, or none: it then follows the unit's)",
				logs.String("unit", unit.Name), logs.Duration("grace", s.cfg.Grace), logs.Duration("timeout_stop", unit.StopTimeout))
		}
	case s.self.pid == 1:
		b = stop.ForPID1()
	case service:
		b = stop.ForUnit(unit.StopTimeout)
	default:
		b = stop.Default()
	}
	if b.NoDeadline {
		s.log.Info("a stop request has no deadline of reaper's own", logs.String("from", b.Source),
			logs.Duration("leftovers_grace", b.Grace))
	} else {
		s.log.Info("grace period", logs.Duration("grace", b.Deadline), logs.String("from", b.Source))
	}
	return b
}

// takeLock takes the named instance's lock, or stops its live holder first
// with --replace.
func (s *supervisor) takeLock() (int, bool) {
	lock, err := instance.Take(s.held.instance)
	var running *instance.ErrRunning
	if errors.As(err, &running) && s.cfg.Replace && !s.self.ownProc {
		// /proc/locks names the holder in another PID namespace: not a pid
		// to signal from here.
		s.log.Error("--replace needs a /proc of reaper's own PID namespace (e.g. unshare --mount-proc)")
		return exitcode.Usage, false
	}
	if errors.As(err, &running) && s.cfg.Replace {
		wait := 2*max(s.stop.budget.Deadline, s.stop.budget.Grace) + 2*killWait
		lock, err = instance.Replace(s.held.instance, running.PID, wait, killWait, s.log, s.caught.stopRequested)
	}
	if err == nil {
		s.held.lock = lock
	}
	switch {
	case s.caught.early != 0:
		s.cleanUp()
		return 128 + int(s.caught.early), false
	case errors.As(err, &running):
		s.log.Error(err.Error())
		return exitcode.Usage, false
	case err != nil:
		s.log.Error("cannot lock the instance", logs.String("instance", s.held.instance), logs.Err(err))
		return exitcode.Internal, false
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
		s.log.Error("cannot contain COMMAND in a cgroup", logs.Err(err))
		return exitcode.Internal, false
	}
	s.log.Info("cgroup containment off: walking /proc instead", logs.Err(err))
	s.held.leaf = nil
	return 0, true
}
