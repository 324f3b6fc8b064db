package reaper

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/reaper-init/reaper/reaper/cgroup"
	"github.com/reaper-init/reaper/reaper/instance"
	"github.com/reaper-init/reaper/reaper/logs"
	"github.com/reaper-init/reaper/reaper/notify"
	"github.com/reaper-init/reaper/reaper/procfs"
)

// prepare does what comes before COMMAND starts: the instance's lock, the
// sweep of an earlier run's leftovers, the ports, the cgroup. It returns
// false and the exit code when reaper must not go on (and has released
// what it took).
func (s *supervisor) prepare() (int, bool) {
	checkStopTimeout(s.cfg.Grace, s.files, s.log)
	s.instance = s.cfg.Instance
	named := s.instance != ""
	if !named {
		s.instance = instance.Unique()
		s.marker = s.instance
	}
	if named {
		if code, ok := s.takeLock(); !ok {
			return code, false
		}
		s.marker = instance.Value(s.instance, s.lock.Token)
	}
	var parentDir, parentPath string
	var cgErr error
	if s.cfg.Cgroup != CgroupOff {
		_, parentDir, parentPath, cgErr = s.files.Group("")
	}
	var previous [][]byte // the earlier runs' markers: their leftovers carry them
	if named {
		sweep := &instance.Sweep{Name: s.instance, Previous: s.lock.Previous, Self: s.self, StopSignal: s.cfg.StopSignal,
			Grace: s.cfg.Grace, KillWait: killWait, Log: s.log, Stop: s.caught.stopRequested}
		if cgErr == nil {
			sweep.Stale, _ = cgroup.Open(parentDir, parentPath, instance.LeafName(s.instance))
		}
		if !s.walkable {
			sweep.Blind = true
			s.log.Warn("/proc belongs to another PID namespace: only the earlier run's cgroup is swept, if any",
				logs.String("instance", s.instance))
		}
		if sweep.Run() && s.walkable {
			if err := s.lock.Swept(); err != nil {
				s.log.Warn("cannot record the sweep: the next run sweeps again", logs.Err(err))
			}
		}
		previous = sweep.Markers()
	}
	if len(s.cfg.WaitPorts) > 0 && s.caught.early == 0 {
		err := waitPorts(s.cfg.WaitPorts, s.cfg.WaitPortTimeout, previous, s.log, s.caught.pause)
		if err != nil && s.caught.early == 0 {
			s.log.Error(err.Error())
			s.cleanUp()
			return ExitUsage, false
		}
	}
	if s.caught.early != 0 {
		s.cleanUp()
		return 128 + int(s.caught.early), false
	}
	if s.cfg.Cgroup != CgroupOff {
		if cgErr == nil {
			s.leaf, cgErr = cgroup.Create(parentDir, parentPath, instance.LeafName(s.instance))
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
	lock, err := instance.Take(s.instance)
	var running *instance.ErrRunning
	if errors.As(err, &running) && s.cfg.Replace && !s.walkable {
		// /proc/locks names the holder in another PID namespace: not a pid
		// to signal from here.
		s.log.Error("--replace needs a /proc of reaper's own PID namespace (e.g. unshare --mount-proc)")
		return ExitUsage, false
	}
	if errors.As(err, &running) && s.cfg.Replace {
		lock, err = instance.Replace(s.instance, running.PID, 2*s.cfg.Grace+2*killWait, killWait, s.log, s.caught.stopRequested)
	}
	if err == nil {
		s.lock = lock
	}
	switch {
	case s.caught.early != 0:
		s.cleanUp()
		return 128 + int(s.caught.early), false
	case errors.As(err, &running):
		s.log.Error(err.Error())
		return ExitUsage, false
	case err != nil:
		s.log.Error("cannot lock the instance", logs.String("instance", s.instance), logs.Err(err))
		return ExitInternal, false
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
		return ExitInternal, false
	}
	s.log.Info("cgroup containment off: walking /proc instead", logs.Err(err))
	s.leaf = nil
	return 0, true
}

// start starts COMMAND, in the leaf cgroup if there is one. With
// --cgroup=auto, a kernel that cannot start a process in a cgroup (clone3
// missing, or refusing CLONE_INTO_CGROUP) makes it start COMMAND outside.
func (s *supervisor) start() (int, error) {
	set := []string{instance.Var + "=" + s.marker}
	if s.relay = s.openRelay(); s.relay != nil {
		set = append(set, notify.Variable+"="+s.relay.Address())
	}
	opts := spawnOptions{
		foreground: s.tty != nil,
		pdeathsig:  s.cfg.PdeathSignal,
		env:        commandEnv(s.cfg.DropEnv, set...),
		pidVars:    pidVariables(s.self),
		mask:       s.mask,
		cgroupFD:   -1,
	}
	if s.leaf != nil {
		opts.cgroupFD = s.leaf.FD()
	}
	pid, err := spawn(s.cfg.Command, opts)
	var se *StartError
	if err != nil && s.leaf != nil && s.cfg.Cgroup == CgroupAuto && errors.As(err, &se) && se.fromClone {
		leaf := s.leaf
		s.noCgroup(fmt.Errorf("cannot start COMMAND in %s: %w", leaf.Dir, se.Err))
		leaf.Remove()
		opts.cgroupFD = -1
		pid, err = spawn(s.cfg.Command, opts)
	}
	if err == nil && s.leaf != nil {
		s.log.Info("contained", logs.String("cgroup", s.leaf.Dir))
	}
	return pid, err
}

// openRelay starts relaying the notifications of COMMAND's tree to systemd
// when reaper runs with NOTIFY_SOCKET (Type=notify units, the watchdog),
// and returns the relay, or nil. See acceptSender for who is relayed.
func (s *supervisor) openRelay() *notify.Relay {
	upstream, ok := os.LookupEnv(notify.Variable)
	if !ok {
		return nil
	}
	self, walkable, euid := s.self, s.walkable, os.Geteuid()
	accept := func(c unix.Ucred) bool {
		return acceptSender(c, self, s.cmd.livePID(), walkable, euid)
	}
	relay, err := notify.Open(upstream, accept, s.log)
	if err != nil {
		s.log.Warn("cannot relay notifications: COMMAND gets the service manager's socket as it is", logs.Err(err))
		return nil
	}
	go relay.Serve()
	return relay
}

// acceptSender decides whether a notification from sender (as the kernel
// attests it) is relayed: when the sender descends from reaper (self), or,
// where /proc shows another PID namespace (walkable false) and cannot
// tell, when it is COMMAND (cmd, 0 once reaped) or in COMMAND's process
// group. A sender that is gone before its datagram is read (systemd-notify
// in a script exits at once) can no longer be placed: it is relayed when
// its user is reaper's (euid), who could act as reaper anyway. Never on
// the word of another user: anyone in the network namespace can find the
// relay's abstract name, and a process that shares COMMAND's user (nobody,
// www-data) is not COMMAND's.
func acceptSender(sender unix.Ucred, self, cmd int, walkable bool, euid int) bool {
	pid := int(sender.Pid)
	if pid <= 0 {
		return false
	}
	if walkable && procfs.Descends(pid, self) {
		return true
	}
	if !walkable && cmd != 0 {
		if pgid, err := unix.Getpgid(pid); pid == cmd || err == nil && pgid == cmd {
			return true
		}
	}
	gone := unix.Kill(pid, 0) == unix.ESRCH
	return gone && int(sender.Uid) == euid
}

// startFailed reports why COMMAND did not start and returns the exit code.
func (s *supervisor) startFailed(err error) int {
	var se *StartError
	if !errors.As(err, &se) {
		se = &StartError{Command: s.cfg.Command[0], Code: ExitInternal, Err: err}
	}
	s.startErr = se
	s.log.Error(se.Error())
	if err := s.writeReport(se.Code); err != nil {
		s.log.Error("cannot write the report", logs.Err(err))
	}
	return se.Code
}
