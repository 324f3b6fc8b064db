package reaper

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/reaper-init/reaper/reaper/cgroup"
	"github.com/reaper-init/reaper/reaper/instance"
	"github.com/reaper-init/reaper/reaper/logs"
	"github.com/reaper-init/reaper/reaper/notify"
	"github.com/reaper-init/reaper/reaper/procfs"
	"github.com/reaper-init/reaper/reaper/stop"
	"github.com/reaper-init/reaper/reaper/tree"
	"github.com/reaper-init/reaper/signals"
)

// killWait bounds how long reaper waits for SIGKILLed processes to go; a
// teardown waits it twice, killing what is left again in between. Only a
// process stuck in uninterruptible sleep, or one reaper may not signal (a
// setuid program under an unprivileged reaper), outlives both.
const killWait = 5 * time.Second

// command is COMMAND, as the event loop knows it. The fast forwarder reads
// it too, under mu: kill(2) on COMMAND's pid or group must not follow
// COMMAND's reaping, after which both may name someone else.
type command struct {
	mu     sync.Mutex
	pid    int // also its process group id
	reaped bool
	status unix.WaitStatus
	lost   bool // COMMAND outlived SIGKILL: its status is unknown
}

// livePID returns COMMAND's pid while it runs: 0 before it starts and
// once it is reaped, when the pid may be another process's. For readers
// outside the event loop.
func (c *command) livePID() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reaped {
		return 0
	}
	return c.pid
}

// supervisor is the event loop: it wires the parts (the signals caught, the
// process tree, the stop machine, the record of a stop) and owns every
// piece of process state. Only the goroutine in Run touches it, except for
// what the forwarder reads under cmd.mu.
type supervisor struct {
	cfg   Config
	log   *logs.Logger
	self  int
	files cgroup.Files // /proc/self/mountinfo and /proc/self/cgroup, read once
	// threads are reaper's threads that can have children: the one that
	// forks COMMAND and the main thread, where orphans are reparented.
	threads []int
	// walkable is false when /proc belongs to another PID namespace: reaper
	// then cannot see its descendants, and must not act on what it reads.
	walkable bool
	mask     unix.Sigset_t   // the signal mask reaper was started with
	spares   <-chan struct{} // closed once the spare threads exist
	caught   *Signals
	tty      *terminal // the terminal handed to COMMAND's group, or nil

	instance string // the --instance name, or the run's unique one
	marker   string // instance.Var's value: the name and this run's token
	lock     *instance.Lock
	leaf     *cgroup.Leaf  // the cgroup COMMAND was born in, or nil
	relay    *notify.Relay // relays COMMAND's notifications to systemd, or nil
	tree     tree.Tree

	cmd     command
	request syscall.Signal // the last stop request reaper received
	fwd     *forwarder
	loop    chan syscall.Signal // signals the forwarder leaves to the event loop
	emptied <-chan struct{}     // the tree's Emptied, until it fires
	// noChildren is what the last wait4 said: ECHILD, nothing is left below
	// reaper (as subreaper it inherits every orphan).
	noChildren bool
	// stopped holds the children wait4 reported stopped and not continued
	// since: a stop continues them (SIGCONT) without reading /proc.
	stopped  map[int]bool
	startErr *StartError

	machine *stop.Machine
	td      *teardown // the record of the stop, once one began
	timers  timers
}

// timers are the deadlines of a run; a nil channel never fires.
type timers struct {
	grace, timeout, kill    *time.Timer
	graceC, timeoutC, killC <-chan time.Time
}

// stopAll stops every timer.
func (t *timers) stopAll() {
	for _, timer := range []*time.Timer{t.grace, t.timeout, t.kill} {
		if timer != nil {
			timer.Stop()
		}
	}
	t.graceC, t.timeoutC, t.killC = nil, nil, nil
}

// Run starts cfg.Command, supervises it until it and every other descendant
// are gone, and returns how reaper should end. Call it once per process,
// from main, and end with the Exit's Do, on the same goroutine: Run makes
// the process a child subreaper, catches every signal it forwards, and
// locks the calling goroutine to its OS thread for good, because COMMAND's
// parent-death signal fires when the thread that forked it exits, not the
// process.
func Run(cfg Config) Exit {
	// Lock first, before anything can move this goroutine: called from
	// main, it then stays on the main thread, the one the kernel reparents
	// orphans to, and reaper's children all hang off one thread.
	runtime.LockOSThread()
	s := &supervisor{self: os.Getpid(), stopped: map[int]bool{}}
	s.threads = []int{s.self}
	if tid := unix.Gettid(); tid != s.self {
		s.threads = append(s.threads, tid)
	}
	s.mask = blockThreadSignals() // terminal work happens on this thread
	// Signals are being caught since main began (CatchSignals). Until the
	// fatal ones are, the Go runtime's own handler would end reaper on a
	// SIGTERM (and, as PID 1, exit with status 2): nothing outside reaper
	// changes before that.
	s.cfg = withDefaults(cfg)
	s.caught = s.cfg.Signals
	s.files = cgroup.ReadFiles()
	spares, room := plannedSpares(s.files)
	s.spares = reserveThreads(spares)
	log, err := logs.New(s.cfg.Stderr, s.cfg.LogFormat, s.cfg.Verbosity)
	if err != nil {
		fmt.Fprintf(s.cfg.Stderr, "reaper: %v\n", err)
		return Code(ExitUsage)
	}
	defer log.Sync()
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
	return s.run()
}

// withDefaults fills in what cfg leaves at its zero value.
func withDefaults(cfg Config) Config {
	if cfg.Signals == nil {
		cfg.Signals = CatchSignals()
	}
	if cfg.Stderr == nil || cfg.Stderr == os.Stderr {
		cfg.Stderr = logs.FD(2)
	}
	if cfg.StopSignal == 0 {
		cfg.StopSignal = syscall.SIGTERM
	}
	if cfg.Policy.StopOn == nil {
		cfg.Policy.StopOn = []syscall.Signal{syscall.SIGTERM}
		if cfg.StopSignal != syscall.SIGTERM {
			cfg.Policy.StopOn = append(cfg.Policy.StopOn, cfg.StopSignal)
		}
	}
	if cfg.ReportPath != "" {
		// reaper leaves the caller's directory once COMMAND runs.
		if abs, err := filepath.Abs(cfg.ReportPath); err == nil {
			cfg.ReportPath = abs
		}
	}
	if cfg.Cgroup == "" {
		cfg.Cgroup = CgroupAuto
	}
	return cfg
}

func (s *supervisor) run() Exit {
	becomeSubreaper(s.self, s.log)
	s.walkable = procIsOurs(s.self, s.log)
	<-s.spares // before anything can fill pids.max: a sweep, a wait, COMMAND
	if code, ok := s.prepare(); !ok {
		if s.caught.early != 0 {
			return s.exit(code, s.caught.early) // a stop request ends reaper as it would have without it
		}
		return Code(code)
	}
	<-s.caught.all // every signal reaper forwards is caught before COMMAND can be sent one
	s.tty = openTerminal()
	pid, err := s.start()
	if err != nil {
		if s.tty != nil {
			s.tty.restore() // the child made itself the foreground before its exec failed
		}
		code := s.startFailed(err)
		s.cleanUp()
		return Code(code)
	}
	s.cmd.mu.Lock() // the relay's goroutine reads it (livePID)
	s.cmd.pid = pid
	s.cmd.mu.Unlock()
	// COMMAND starts in the caller's directory; reaper itself moves to /,
	// so that it never keeps a mount busy.
	if err := unix.Chdir("/"); err != nil {
		s.log.Warn("cannot leave the working directory", logs.Err(err))
	}
	s.tree = s.newTree()
	s.emptied = s.tree.Emptied()
	s.machine = stop.New(s.cfg.Grace, s.cfg.Wait)
	s.loop = make(chan syscall.Signal, 64)
	s.fwd = &forwarder{policy: s.cfg.Policy, log: s.log, cmd: &s.cmd, tree: s.tree, tty: s.tty, self: s.self,
		procIsOurs: s.walkable, loop: s.loop}
	go s.fwd.fastForward(s.caught.sigs)
	s.log.Info("started", logs.Int("pid", pid), logs.String("command", strings.Join(s.cfg.Command, " ")))
	if s.cfg.Timeout > 0 {
		s.timers.timeout = time.NewTimer(s.cfg.Timeout)
		s.timers.timeoutC = s.timers.timeout.C
	}
	for s.machine.Phase() != stop.Done {
		s.step()
	}
	s.timers.stopAll()
	if s.tty != nil {
		s.tty.restore()
	}
	code := exitCode(&s.cmd, s.machine.TimedOut(), s.cfg.SuccessExit)
	s.end(code)
	if s.cmd.status.Signaled() {
		return s.exit(code, s.cmd.status.Signal())
	}
	return Code(code)
}

// exit is how reaper ends with code, when signal sig is what ended COMMAND
// (or would have ended reaper): it dies of sig, unless it is PID 1 or code
// is not 128+sig (--success-exit, --timeout).
func (s *supervisor) exit(code int, sig syscall.Signal) Exit {
	if s.self == 1 || code != 128+int(sig) {
		return Code(code)
	}
	return Exit{Code: code, Signal: sig}
}

// newTree returns the tree of COMMAND's descendants: the cgroup leaf's
// members where COMMAND was born in one, a walk of /proc otherwise, and
// COMMAND's process group alone where /proc cannot be trusted.
func (s *supervisor) newTree() tree.Tree {
	if !s.walkable {
		return &tree.Blind{Leader: s.cmd.pid, PID1: s.self == 1, Leaf: s.leaf}
	}
	hidden := &hiddenSet{log: s.log}
	proc := tree.NewProc(s.self, s.threads, hidden.report)
	if s.leaf == nil {
		return proc
	}
	t, err := tree.NewCgroup(s.leaf, proc)
	if err != nil {
		s.log.Warn("cannot watch the cgroup: relying on wait4 alone", logs.Err(err))
	}
	return t
}

// step waits for one event and handles it.
func (s *supervisor) step() {
	var exits <-chan []int32
	if s.td != nil && s.td.watcher != nil {
		exits = s.td.watcher.C
	}
	select {
	case <-s.caught.chld:
		s.reap()
	case sig := <-s.caught.stops:
		if s.caught.isStop(sig.(syscall.Signal)) { // else it came on sigs too, to be forwarded
			s.onStopRequest(sig.(syscall.Signal))
		}
	case sig := <-s.loop:
		s.fwd.onSignal(sig)
		s.fwd.pending.Add(-1) // after: a signal behind it must not overtake it
	case tokens := <-exits:
		s.td.noteExits(tokens, time.Now())
	case <-s.timers.graceC:
		s.timers.graceC = nil
		s.log.Info("grace period over", logs.Duration("grace", s.cfg.Grace))
		s.feed(stop.GraceExpired)
	case <-s.timers.timeoutC:
		s.timers.timeoutC = nil
		if !s.machine.Stopping() {
			s.log.Warn("timeout expired: stopping everything", logs.Duration("timeout", s.cfg.Timeout))
		}
		s.feed(stop.TimeoutExpired)
	case <-s.timers.killC:
		s.timers.killC = nil
		s.feed(stop.KillWaitExpired)
	case <-s.emptied:
		s.emptied = nil // what is left, if anything, left the leaf: walk /proc for it
		if s.td != nil {
			s.td.quiet = true
		}
	}
	s.advance()
}

// advance tells the stop machine what the event changed: the tree is
// empty, or everything the stop signalled is gone while something is left.
func (s *supervisor) advance() {
	if !s.machine.Stopping() && s.machine.Phase() != stop.Draining {
		return
	}
	if s.cmd.reaped && s.tree.Done(s.noChildren) {
		s.feed(stop.TreeEmpty)
		return
	}
	if s.td != nil && s.td.wentQuiet() {
		s.feed(stop.Quiet)
	}
}

// feed hands an event to the stop machine, carries out its actions and
// returns them.
func (s *supervisor) feed(ev stop.Event) []stop.Action {
	acts := s.machine.Handle(ev)
	for _, act := range acts {
		switch act {
		case stop.SignalTree:
			s.signalTree()
		case stop.SignalMissed:
			s.signalMissed()
		case stop.ArmGrace:
			s.timers.armGrace(s.cfg.Grace, s.td.began)
		case stop.ArmKillWait:
			s.timers.armKillWait()
		case stop.KillTree:
			s.killTree()
		case stop.GiveUp:
			s.giveUp()
		case stop.Finish:
			if s.td != nil {
				s.td.finish(time.Now(), false)
			}
		}
	}
	return acts
}

// reap drains wait4 until no exited child is left, and tells the stop
// machine when COMMAND was among the reaped. It is the only caller of
// wait4.
func (s *supervisor) reap() {
	exited := s.reapAll()
	if !exited {
		return
	}
	s.log.Info("command exited", logs.Int("pid", s.cmd.pid), logs.String("status", describeStatus(s.cmd.status)))
	if s.tree.Done(s.noChildren) {
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
			s.noChildren = true
			return commandExited
		case err != nil:
			s.log.Error("wait4 failed", logs.Err(err))
			return commandExited
		case pid == 0:
			s.noChildren = false
			return commandExited
		case status.Stopped():
			s.stopped[pid] = true
			if pid == s.cmd.pid {
				s.fwd.onCommandStopped(status.StopSignal(), s.machine.Phase() == stop.Running)
			}
			continue
		case status.Continued():
			delete(s.stopped, pid)
			continue
		}
		delete(s.stopped, pid)
		if s.log.DebugEnabled() {
			s.log.Debug("reaped", logs.Int("pid", pid), logs.String("status", describeStatus(status)))
		}
		if s.td != nil {
			s.td.noteReaped(pid, time.Now())
		}
		if pid == s.cmd.pid && !s.cmd.reaped {
			s.cmd.reaped, s.cmd.status, commandExited = true, status, true
		}
	}
}

// onStopRequest handles a stop request: before a stop, it begins one (the
// request is forwarded there, after the walk); during one, a second
// request ends the grace period.
func (s *supervisor) onStopRequest(sig syscall.Signal) {
	s.request = sig
	during := s.machine.Phase() == stop.Stopping
	acts := s.feed(stop.StopRequest)
	switch {
	case during && len(acts) > 0:
		s.log.Info("second stop signal: killing now", logs.Signal("signal", sig))
	case during:
		// The stop began without a signal (COMMAND exited, or --timeout):
		// everyone already got the stop signal, and the deadline stands.
		s.log.Info("stop already under way", logs.Signal("signal", sig))
	}
}

// armGrace arms the grace deadline, which counts from began, the start of
// the stop, not from the end of its walk.
func (t *timers) armGrace(grace time.Duration, began time.Time) {
	t.grace = time.NewTimer(max(grace-time.Since(began), 0))
	t.graceC = t.grace.C
}

// armKillWait disarms the grace deadline and arms the kill wait.
func (t *timers) armKillWait() {
	if t.grace != nil {
		t.grace.Stop()
		t.graceC = nil
	}
	t.kill = time.NewTimer(killWait)
	t.killC = t.kill.C
}

// exitCode is COMMAND's status as a shell reports it (0 for codes listed in
// successExit), ExitTimeout when --timeout fired, ExitInternal when COMMAND
// outlived SIGKILL.
func exitCode(cmd *command, timedOut bool, successExit []int) int {
	switch {
	case timedOut:
		return ExitTimeout
	case cmd.lost:
		return ExitInternal
	}
	code := cmd.status.ExitStatus()
	if cmd.status.Signaled() {
		code = 128 + int(cmd.status.Signal())
	}
	for _, ok := range successExit {
		if code == ok {
			return 0
		}
	}
	return code
}

// becomeSubreaper makes orphaned descendants of process self reparent to
// it instead of to init. PID 1 of a namespace is their reaper already.
func becomeSubreaper(self int, log *logs.Logger) {
	if self == 1 {
		return
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		log.Warn("cannot become a child subreaper: orphans will escape to init", logs.Err(err))
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

// describeStatus renders a wait status as "exit 3" or "signal SIGKILL".
func describeStatus(ws unix.WaitStatus) string {
	switch {
	case ws.Exited():
		return fmt.Sprintf("exit %d", ws.ExitStatus())
	case ws.Signaled() && ws.CoreDump():
		return "signal " + signals.Name(ws.Signal()) + " (core dumped)"
	case ws.Signaled():
		return "signal " + signals.Name(ws.Signal())
	}
	return fmt.Sprintf("status %#x", uint32(ws))
}
