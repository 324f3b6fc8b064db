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
	"github.com/reaper-init/reaper/reaper/instance"
	"github.com/reaper-init/reaper/reaper/logs"
	"github.com/reaper-init/reaper/reaper/ports"
	"github.com/reaper-init/reaper/reaper/procfs"
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
		log.Debug("inherited as ignored: not forwarded", logs.Signal("signal", sig))
	}
	return true
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
	systemd.CheckStopTimeout(s.cfg.Grace, s.self.files, s.log)
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
	}
	var previous [][]byte // the earlier runs' markers: their leftovers carry them
	if named {
		sweep := &instance.Sweep{Name: s.held.instance, Previous: s.held.lock.Previous, Self: s.self.pid, StopSignal: s.cfg.StopSignal,
			Grace: s.cfg.Grace, KillWait: killWait, Log: s.log, Stop: s.caught.stopRequested}
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
		lock, err = instance.Replace(s.held.instance, running.PID, 2*s.cfg.Grace+2*killWait, killWait, s.log, s.caught.stopRequested)
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
