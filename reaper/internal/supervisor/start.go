package supervisor

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/reaper-init/reaper/reaper/exitcode"
	"github.com/reaper-init/reaper/reaper/guardian"
	"github.com/reaper-init/reaper/reaper/instance"
	"github.com/reaper-init/reaper/reaper/logs"
	"github.com/reaper-init/reaper/reaper/spawn"
	"github.com/reaper-init/reaper/reaper/stop"
	"github.com/reaper-init/reaper/reaper/systemd/notify"
	"github.com/reaper-init/reaper/reaper/tree"
)

// start starts COMMAND and everything that follows it while it runs: the
// process tree, the stop machine, the forwarder, the --timeout deadline.
// reaper then leaves the caller's directory. On failure nothing of that
// exists, and the terminal is as reaper found it.
func (s *supervisor) start() error {
	s.tty = openTerminal()
	pid, err := s.spawn()
	if err != nil {
		if s.tty != nil {
			s.tty.restore() // the child made itself the foreground before its exec failed
		}
		return err
	}
	s.cmd.mu.Lock() // the relay's goroutine reads it (livePID)
	s.cmd.pid = pid
	s.cmd.mu.Unlock()
	s.tree = s.newTree()
	s.stop.emptied = s.tree.Emptied()
	// Where /proc is not reaper's, the tree is COMMAND's process group
	// while COMMAND lives, and nothing once it has exited: the others
	// must get the stop signal with COMMAND.
	order := stop.Mixed
	if s.cfg.KillMode == KillModeControlGroup || !s.self.ownProc {
		order = stop.All
	}
	s.stop.machine = stop.New(s.stop.budget, order, s.cfg.Wait)
	s.forwarder = &forwarder{policy: s.cfg.Policy, log: s.log, cmd: &s.cmd, tree: s.tree, tty: s.tty,
		self: s.self.pid, procIsOurs: s.self.ownProc, loop: make(chan syscall.Signal, 64)}
	go s.forwarder.fastForward(s.caught.sigs)
	s.log.Info("started", logs.Int("pid", pid), logs.String("command", strings.Join(s.cfg.Command, " ")))
	if s.cfg.Timeout > 0 {
		s.stop.timers.timeout = time.NewTimer(s.cfg.Timeout)
		s.stop.timers.timeoutC = s.stop.timers.timeout.C
	}
	return nil
}

// spawn starts COMMAND, in the leaf cgroup if there is one. With
// --cgroup=auto, a kernel that cannot start a process in a cgroup (clone3
// missing, or refusing CLONE_INTO_CGROUP) makes it start COMMAND outside.
// COMMAND starts in the caller's directory; reaper itself moves to / first
// (once COMMAND's path is found there), so that it never keeps a mount
// busy.
func (s *supervisor) spawn() (int, error) {
	path, err := spawn.LookPath(s.cfg.Command[0])
	if err != nil {
		return 0, err
	}
	dir, err := os.Getwd()
	if err == nil {
		err = unix.Chdir("/")
	}
	if err != nil {
		s.log.Warn("cannot leave the working directory", logs.Err(err))
		dir = ""
	}
	set := []string{instance.Var + "=" + instance.Nest(s.held.marker, os.Getenv(instance.Var))}
	if s.held.relay = s.openRelay(); s.held.relay != nil {
		set = append(set, notify.Variable+"="+s.held.relay.Address())
	}
	opts := spawn.Options{
		Foreground: s.tty != nil,
		Pdeathsig:  s.cfg.PdeathSignal,
		Env:        spawn.Env(s.cfg.DropEnv, set...),
		PIDVars:    spawn.PIDVariables(s.self.pid),
		Ignore:     s.caught.ignored,
		Mask:       s.self.mask,
		CgroupFD:   -1,
		Dir:        dir,
	}
	if s.held.leaf != nil {
		opts.CgroupFD = s.held.leaf.FD()
	}
	s.armGuardian()
	pid, err := spawn.Start(path, s.cfg.Command, opts)
	var se *spawn.StartError
	if err != nil && s.held.leaf != nil && s.cfg.Cgroup == CgroupAuto && errors.As(err, &se) && se.FromClone {
		leaf := s.held.leaf
		s.noCgroup(fmt.Errorf("cannot start COMMAND in %s: %w", leaf.Dir, se.Err))
		leaf.Remove()
		opts.CgroupFD = -1
		pid, err = spawn.Start(path, s.cfg.Command, opts)
	}
	if err == nil && s.held.leaf != nil {
		s.log.Info("contained", logs.String("cgroup", s.held.leaf.Dir))
	}
	return pid, err
}

// armGuardian tells the guardian what the run is, before COMMAND starts.
func (s *supervisor) armGuardian() {
	if s.held.guardian == nil {
		return
	}
	spec := guardian.Spec{Name: s.held.instance, Marker: s.held.marker, LogFormat: s.cfg.LogFormat}
	if leaf := s.held.leaf; leaf != nil {
		spec.ParentDir, spec.ParentPath, spec.Leaf = filepath.Dir(leaf.Dir), filepath.Dir(leaf.Path), filepath.Base(leaf.Dir)
	}
	if err := s.held.guardian.Arm(spec); err != nil {
		s.log.Warn("no guardian: should reaper die, what the run left will not be stopped", logs.Err(err))
	}
}

// openRelay starts relaying the notifications of COMMAND's tree to systemd
// when reaper runs with NOTIFY_SOCKET (Type=notify units, the watchdog),
// and returns the relay, or nil. See notify.Accept for who is relayed.
func (s *supervisor) openRelay() *notify.Relay {
	upstream, ok := os.LookupEnv(notify.Variable)
	if !ok {
		return nil
	}
	self, ownProc, euid := s.self.pid, s.self.ownProc, os.Geteuid()
	accept := func(c unix.Ucred) bool {
		return notify.Accept(c, self, s.cmd.livePID(), ownProc, euid)
	}
	relay, err := notify.Open(upstream, accept, s.log)
	if err != nil {
		s.log.Warn("cannot relay notifications: COMMAND gets the service manager's socket as it is", logs.Err(err))
		return nil
	}
	go relay.Serve()
	return relay
}

// newTree returns the tree of COMMAND's descendants: the cgroup leaf's
// members where COMMAND was born in one, a walk of /proc otherwise, and
// COMMAND's process group alone where /proc cannot be trusted.
func (s *supervisor) newTree() tree.Tree {
	if !s.self.ownProc {
		return &tree.Blind{Leader: s.cmd.pid, PID1: s.self.pid == 1, Leaf: s.held.leaf}
	}
	hidden := &hiddenSet{log: s.log}
	proc := tree.NewProc(s.self.pid, s.self.threads, hidden.report)
	if s.held.guardian != nil {
		proc.Exclude = s.held.guardian.PID() // reaper's own, no descendant of COMMAND's
	}
	if s.held.leaf == nil {
		return proc
	}
	t, err := tree.NewCgroup(s.held.leaf, proc)
	if err != nil {
		s.log.Warn("cannot watch the cgroup: relying on wait4 alone", logs.Err(err))
	}
	return t
}

// hiddenSet is the descendants /proc would not show, warned of once each:
// reaper cannot signal them.
type hiddenSet struct {
	log  *logs.Logger
	seen map[int]bool
}

func (h *hiddenSet) report(pid int) {
	if h.seen[pid] {
		return
	}
	if h.seen == nil {
		h.seen = map[int]bool{}
	}
	h.seen[pid] = true
	h.log.Warn("cannot see a descendant (/proc hides it: hidepid, or another user's process): not signalled", logs.Int("pid", pid))
}

// startFailed reports why COMMAND did not start and returns the exit code.
func (s *supervisor) startFailed(err error) int {
	var se *spawn.StartError
	if !errors.As(err, &se) {
		se = &spawn.StartError{Command: s.cfg.Command[0], Code: exitcode.Internal, Err: err}
	}
	s.startErr = se
	s.log.Error(se.Error())
	if err := s.writeReport(se.Code); err != nil {
		s.log.Error("cannot write the report", logs.Err(err))
	}
	return se.Code
}
