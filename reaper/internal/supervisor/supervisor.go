// Package supervisor is reaper's event loop: it starts COMMAND, forwards
// the signals reaper receives, reaps, and carries out the stop that the
// pure stop machine (reaper/stop) decides, noting it in the record
// (reaper/record). One goroutine, locked to one OS thread, owns all
// process state.
//
// Its files, in the order of a run (each uses only what the files before
// it define, and the parts at the end):
//
//   - supervisor.go: Run, the supervisor and its state;
//   - setup.go: what comes before COMMAND (subreaper, the instance's lock
//     and sweep, the ports, the cgroup);
//   - start.go: COMMAND's start (its environment, the relay, the
//     terminal, the cgroup fallback);
//   - loop.go: the event loop (step, advance, feed), reaping, the exit
//     code;
//   - actions.go: what each action of the stop machine does to the tree;
//   - end.go: the report, and releasing what the run took.
//
// The parts: signals.go (what is caught, and routed to the stop requests
// or the rest), forward.go (where a forwarded signal goes, job control),
// terminal.go, threads.go (spare threads under a pids limit).
package supervisor

import (
	"io"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/reaper-init/reaper/reaper/cgroup"
	"github.com/reaper-init/reaper/reaper/exitcode"
	"github.com/reaper-init/reaper/reaper/guardian"
	"github.com/reaper-init/reaper/reaper/instance"
	"github.com/reaper-init/reaper/reaper/logs"
	"github.com/reaper-init/reaper/reaper/record"
	"github.com/reaper-init/reaper/reaper/spawn"
	"github.com/reaper-init/reaper/reaper/stop"
	"github.com/reaper-init/reaper/reaper/systemd/notify"
	"github.com/reaper-init/reaper/reaper/tree"
	"github.com/reaper-init/reaper/signals"
)

// Config is reaper.Config, field for field (see there for each field's
// contract): the public package converts one into the other.
type Config struct {
	Command      []string
	Policy       signals.Policy
	SuccessExit  []int
	PdeathSignal syscall.Signal

	StopSignal  syscall.Signal
	Grace       time.Duration
	KillMode    string
	Timeout     time.Duration
	Wait        bool
	ReportPath  string
	StepSummary string
	Leftovers   string

	Instance        string
	Replace         bool
	Cgroup          string
	Guardian        string
	WaitPorts       []int
	WaitPortTimeout time.Duration

	DropEnv []string

	LogFormat string
	Verbosity int
	Signals   *Signals

	Stderr io.Writer
}

// GraceAuto is Config.Grace's "as the manager allows".
const GraceAuto time.Duration = -1

// Kill modes (Config.KillMode).
const (
	KillModeMixed        = "mixed"         // COMMAND first, the others once it has exited
	KillModeControlGroup = "control-group" // every descendant at once
)

// What to do with what COMMAND leaves (Config.Leftovers).
const (
	LeftoversStop = "stop" // stop it
	LeftoversFail = "fail" // stop it, and fail a run whose COMMAND exited 0
)

// Guardian modes (Config.Guardian).
const (
	GuardianAuto = "auto" // a guardian unless reaper is PID 1
	GuardianOff  = "off"  // none
)

// Cgroup modes (Config.Cgroup).
const (
	CgroupAuto = "auto" // contain COMMAND in a cgroup when possible
	CgroupOn   = "on"   // contain COMMAND in a cgroup, or fail
	CgroupOff  = "off"  // walk /proc only
)

// Exit is reaper.Exit: an exit code, or the signal to die of.
type Exit struct {
	Code   int
	Signal syscall.Signal
}

// killWait bounds how long reaper waits for SIGKILLed processes to go; a
// teardown waits it twice, killing what is left again in between. Only a
// process stuck in uninterruptible sleep, or one reaper may not signal (a
// setuid program under an unprivileged reaper), outlives both.
const killWait = 5 * time.Second

// supervisor is the event loop: it wires the parts (the signals caught, the
// process tree, the stop machine, the record of a stop) and owns every
// piece of process state. Only the goroutine in Run touches it, except for
// what the forwarder reads under cmd.mu.
type supervisor struct {
	cfg    Config
	log    *logs.Logger
	self   self
	caught *Signals
	held   held
	tty    *terminal // the terminal handed to COMMAND's group, or nil

	cmd       command
	tree      tree.Tree
	children  children
	forwarder *forwarder
	stop      stopping
	startErr  *spawn.StartError
}

// self is reaper itself, as the kernel shows it.
type self struct {
	pid int
	// threads are reaper's threads that can have children: the one that
	// forks COMMAND and the main thread, where orphans are reparented.
	threads []int
	// ownProc is false when /proc belongs to another PID namespace: reaper
	// then cannot see its descendants, and must not act on what it reads.
	ownProc bool
	mask    unix.Sigset_t   // the signal mask reaper was started with
	files   cgroup.Files    // /proc/self/mountinfo and /proc/self/cgroup, read once
	spares  <-chan struct{} // closed once the spare threads exist
}

// held is what a run takes before COMMAND starts, and releases at its end.
type held struct {
	instance string // the --instance name, or the run's unique one
	marker   string // instance.Var's value: the name and this run's token
	lock     *instance.Lock
	leaf     *cgroup.Leaf       // the cgroup COMMAND was born in, or nil
	relay    *notify.Relay      // relays COMMAND's notifications to systemd, or nil
	guardian *guardian.Guardian // stops what the run left if reaper dies, or nil
}

// children is what wait4 said of reaper's children.
type children struct {
	// none is set when the last wait4 said ECHILD: nothing is left below
	// reaper (as subreaper it inherits every orphan).
	none bool
	// guardianOnly is set when the last wait4 found children but none
	// exited while the guardian lives: nothing else may be left (see
	// noChildren).
	guardianOnly bool
	// stopped holds the children wait4 reported stopped and not continued
	// since: a stop continues them (SIGCONT) without reading /proc.
	stopped map[int]bool
}

// stopping is the state of the stop: the machine that decides, and what
// carries its decisions out.
type stopping struct {
	budget  stop.Budget // how long a stop may take
	machine *stop.Machine
	request syscall.Signal // the last stop request reaper received
	record  *record.Stop   // the record of the stop, once one began
	exits   exitWatch      // the pidfds of the processes the stop tracks
	timers  timers
	emptied <-chan struct{} // the tree's Emptied, until it fires
	// walkDue asks for a walk at the next chance: the tree emptied its
	// cgroup while something is left below reaper.
	walkDue bool
}

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

// timers are the deadlines of a run; a nil channel never fires.
type timers struct {
	grace, others, timeout, kill     *time.Timer
	graceC, othersC, timeoutC, killC <-chan time.Time
	graceAt                          time.Time     // when grace fires
	graceFor                         time.Duration // the period it ends, for the log
}

// Run starts cfg.Command, supervises it until it and every other descendant
// are gone, and returns how reaper should end: see reaper.Run.
func Run(cfg Config) Exit {
	// Lock first, before anything can move this goroutine: called from
	// main, it then stays on the main thread, the one the kernel reparents
	// orphans to, and reaper's children all hang off one thread.
	runtime.LockOSThread()
	s := &supervisor{self: self{pid: os.Getpid()}, children: children{stopped: map[int]bool{}}}
	s.self.threads = []int{s.self.pid}
	if tid := unix.Gettid(); tid != s.self.pid {
		s.self.threads = append(s.self.threads, tid)
	}
	s.self.mask = spawn.BlockThreadSignals() // terminal work happens on this thread
	// Signals are being caught since main began (CatchSignals). Until the
	// fatal ones are, the Go runtime's own handler would end reaper on a
	// SIGTERM (and, as PID 1, exit with status 2): nothing outside reaper
	// changes before that.
	s.cfg = cfg
	s.caught = cfg.Signals
	if !s.setUp() {
		return Exit{Code: exitcode.Usage}
	}
	defer s.log.Sync()
	return s.supervise()
}

// supervise is the run, once reaper is set up: what comes before COMMAND,
// COMMAND's start, the event loop until nothing is left, and the end.
func (s *supervisor) supervise() Exit {
	s.becomeSubreaper()
	s.self.ownProc = procIsOurs(s.self.pid, s.log)
	s.launchGuardian() // early: its start overlaps the rest of the set-up
	<-s.self.spares    // before anything can fill pids.max: a sweep, a wait, COMMAND
	if code, ok := s.prepare(); !ok {
		if s.caught.early != 0 {
			return s.exit(code, s.caught.early) // a stop request ends reaper as it would have without it
		}
		return Exit{Code: code}
	}
	<-s.caught.all // every signal reaper forwards is caught before COMMAND can be sent one
	if err := s.start(); err != nil {
		code := s.startFailed(err)
		s.cleanUp()
		return Exit{Code: code}
	}
	s.loop()
	code := s.exitCode()
	s.end(code)
	if sig := exitcode.Signal(s.cmd.status); sig != 0 {
		return s.exit(code, sig)
	}
	return Exit{Code: code}
}

// exit is how reaper ends with code, when signal sig is what ended COMMAND
// (or would have ended reaper): it dies of sig, unless it is PID 1 or code
// is not 128+sig (--success-exit, --timeout).
func (s *supervisor) exit(code int, sig syscall.Signal) Exit {
	if s.self.pid == 1 || code != 128+int(sig) {
		return Exit{Code: code}
	}
	return Exit{Code: code, Signal: sig}
}
