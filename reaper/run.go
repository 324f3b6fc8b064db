package reaper

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"

	"github.com/reaper-init/reaper/signals"
)

// phase is where the supervisor stands; it only moves forward.
type phase int

const (
	running  phase = iota // COMMAND runs; no stop has begun
	draining              // --wait: COMMAND is gone, the rest may finish on their own
	stopping              // the stop signal went out; the grace deadline runs
	killing               // SIGKILL went out; every new descendant gets one too
	done                  // nothing is left below reaper
)

// killWait bounds how long reaper waits for SIGKILLed processes to go. Only a
// process stuck in uninterruptible sleep, or one reaper may not signal (a
// setuid program under an unprivileged reaper), outlives it.
const killWait = 10 * time.Second

// supervisor is the event loop's state. Only the goroutine in Run touches
// it, except for what the fast forwarder reads under reapMu (see
// fastForward) and the signal channels catchSignals hands to os/signal.
type supervisor struct {
	cfg  Config
	log  *logger
	self int
	// walkable is false when /proc belongs to another PID namespace: reaper
	// then cannot see its descendants, and must not act on what it reads.
	walkable bool
	// threads are reaper's threads that can have children: the one that
	// forks COMMAND and the main thread, where orphans are reparented.
	threads []int
	// tty is the terminal reaper handed to COMMAND's group; nil when stdin
	// is no terminal, or reaper was not in its foreground.
	tty *terminal

	instance string          // the run's instance name (InstanceVar)
	lock     *instanceLock   // held for a named instance
	cg       *cgroup         // the leaf COMMAND was born in; nil without containment
	cgEmpty  <-chan struct{} // closed when the leaf holds no process (set during a stop)
	cgDone   bool
	// cgroupFiles are /proc/self/mountinfo and /proc/self/cgroup, read at
	// start for pids.max, the cgroup leaf and the systemd unit.
	cgroupFiles cgroupFiles
	hidden      map[int]bool    // descendants /proc would not show, warned of
	mask        unix.Sigset_t   // the signal mask reaper was started with
	spares      <-chan struct{} // closed once the spare threads exist (see spareThreads)
	fatalCaught <-chan struct{} // closed once no signal can end reaper uncaught (set by catchSignals)
	caught      <-chan struct{} // closed once every signal reaper forwards is caught (set by catchSignals)
	stopped     syscall.Signal  // a stop signal that came before COMMAND started

	chld  chan os.Signal // SIGCHLD alone: one pending is enough, reaping drains
	stops chan os.Signal // the stop signals (see catchSignals)
	sigs  chan os.Signal // every other caught signal, read by the fast forwarder once COMMAND runs
	// loop carries the signals the fast forwarder leaves to the event loop;
	// loopPending counts those not handled yet (see fastForward).
	loop        chan syscall.Signal
	loopPending atomic.Int32
	// reapMu is held while reaping and while the fast forwarder signals
	// COMMAND's pid or group: kill(2) must not follow COMMAND's reaping.
	reapMu sync.Mutex

	child       int  // COMMAND's pid, also its process group id
	childGone   bool // COMMAND was reaped: its pid and group id may be reused
	childStatus unix.WaitStatus
	noChildren  bool // the last wait4 said ECHILD: nothing is left below reaper
	// childStopped holds the children wait4 reported stopped and not
	// continued since: teardown continues them without reading /proc (see
	// openChild).
	childStopped map[int]bool
	startErr     *StartError
	lostChild    bool // COMMAND outlived SIGKILL: its status is unknown

	phase    phase
	timedOut bool
	stop     *teardown // set when a stop begins

	graceTimer, timeoutTimer, killTimer *time.Timer
	graceC, timeoutC, killC             <-chan time.Time
}

// Run starts cfg.Command, supervises it until it and every other descendant
// are gone, and returns the code reaper should exit with. Call it once per
// process, from main: it makes the process a child subreaper, catches every
// signal it forwards, and locks the calling goroutine to its OS thread for
// good, because COMMAND's parent-death signal fires when the thread that
// forked it exits, not the process.
func Run(cfg Config) int {
	// Lock first, before anything can move this goroutine: called from
	// main, it then stays on the main thread, the one the kernel reparents
	// orphans to, and reaper's children all hang off one thread.
	runtime.LockOSThread()
	s := &supervisor{cfg: cfg, self: os.Getpid(), threads: []int{os.Getpid()}, childStopped: map[int]bool{}}
	if tid := unix.Gettid(); tid != s.self {
		s.threads = append(s.threads, tid)
	}
	s.mask = blockThreadSignals() // all logging and terminal work happen on this thread
	// Start catching signals next: until the fatal ones are caught the Go
	// runtime's own handler would end reaper on a SIGTERM (and, as PID 1,
	// exit with status 2), so nothing outside reaper changes before that.
	ignored := s.catchSignals()
	s.cgroupFiles = readCgroupFiles()
	spares, room := plannedSpares(s.cgroupFiles)
	s.spares = reserveThreads(spares)
	if cfg.Stderr == nil || cfg.Stderr == os.Stderr {
		cfg.Stderr = rawWriter(2)
	}
	if cfg.StopSignal == 0 {
		cfg.StopSignal = syscall.SIGTERM
	}
	if cfg.Cgroup == "" {
		cfg.Cgroup = CgroupAuto
	}
	s.cfg = cfg
	log, err := newLogger(cfg.Stderr, cfg.LogFormat, cfg.Verbosity)
	if err != nil {
		fmt.Fprintf(cfg.Stderr, "reaper: %v\n", err)
		return ExitUsage
	}
	defer log.Sync()
	s.log = log
	if spares < spareThreads {
		log.Warn("pids.max leaves little room: fewer spare threads, so a tree that fills it may crash reaper",
			intField("room", room), intField("spare_threads", spares))
	}
	for _, sig := range ignored {
		log.Debug("inherited as ignored: not forwarded", stringerField("signal", sigName(sig)))
	}
	<-s.fatalCaught // until then a SIGTERM would end reaper: before it has changed anything
	return s.run()
}

func (s *supervisor) run() int {
	s.becomeSubreaper()
	s.checkProc()
	<-s.spares // before anything can fill pids.max: a sweep, a wait, COMMAND
	if code, ok := s.prepare(); !ok {
		return code
	}
	defer s.cleanUp()
	<-s.caught // every signal reaper forwards is caught before COMMAND can be sent one
	s.tty = openTerminal()
	pid, err := s.start()
	if err != nil {
		if s.tty != nil {
			s.tty.restore() // the child made itself the foreground before its exec failed
		}
		return s.startFailed(err)
	}
	s.child = pid
	s.loop = make(chan syscall.Signal, 64)
	go s.fastForward()
	s.log.Info("started", intField("pid", pid), stringField("command", strings.Join(s.cfg.Command, " ")))
	if s.cfg.Timeout > 0 {
		s.timeoutTimer = time.NewTimer(s.cfg.Timeout)
		s.timeoutC = s.timeoutTimer.C
	}
	for s.phase != done {
		s.step()
	}
	if s.tty != nil {
		s.tty.restore()
	}
	code := s.exitCode()
	s.writeReport(code)
	return code
}

// start starts COMMAND, in the leaf cgroup if there is one. With
// --cgroup=auto a failure to start it there (clone3 refused) falls back to
// starting it outside.
func (s *supervisor) start() (int, error) {
	opts := spawnOptions{
		foreground: s.tty != nil,
		pdeathsig:  s.cfg.PdeathSignal,
		instance:   s.instance,
		cgroupFD:   -1,
	}
	if s.cg != nil {
		opts.cgroupFD = s.cg.fd
	}
	restoreThreadSignals(s.mask) // COMMAND gets the forking thread's mask
	defer blockThreadSignals()
	pid, err := spawn(s.cfg.Command, opts)
	var se *StartError
	if err != nil && s.cg != nil && s.cfg.Cgroup == CgroupAuto && errors.As(err, &se) && !se.fromExec() {
		cg := s.cg
		s.noCgroup(fmt.Errorf("cannot start COMMAND in %s: %w", cg.dir, se.Err))
		cg.remove()
		opts.cgroupFD = -1
		pid, err = spawn(s.cfg.Command, opts)
	}
	if err == nil && s.cg != nil {
		s.log.Info("contained", stringField("cgroup", s.cg.dir))
	}
	return pid, err
}

// cleanUp releases what prepare took: the cgroup (once empty) and the lock.
func (s *supervisor) cleanUp() {
	if s.cg != nil {
		if err := s.cg.remove(); err != nil {
			s.log.Warn("cannot remove the cgroup", stringField("cgroup", s.cg.dir), errorField(err))
		}
	}
	if s.lock != nil {
		s.lock.release()
	}
}

// startFailed reports why COMMAND did not start and returns the exit code.
func (s *supervisor) startFailed(err error) int {
	var se *StartError
	if !errors.As(err, &se) {
		se = &StartError{Command: s.cfg.Command[0], Code: ExitInternal, Err: err}
	}
	s.startErr = se
	s.log.Error(se.Error())
	s.writeReport(se.Code)
	return se.Code
}

// becomeSubreaper makes orphaned descendants reparent to reaper instead of
// to init. PID 1 of a namespace is their reaper already.
func (s *supervisor) becomeSubreaper() {
	if s.self == 1 {
		return
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		s.log.Warn("cannot become a child subreaper: orphans will escape to init", errorField(err))
	}
}

// checkProc makes sure /proc shows reaper's own PID namespace (as it does
// unless a namespace was made without mounting a /proc of its own): every
// pid read there must mean what it means to reaper's system calls.
func (s *supervisor) checkProc() {
	link, err := os.Readlink(procRoot + "/self")
	s.walkable = err == nil && link == strconv.Itoa(s.self)
	if !s.walkable {
		s.log.Warn("/proc belongs to another PID namespace (mount a /proc of its own, e.g. unshare --mount-proc): "+
			"reaper cannot see its descendants and stops only COMMAND's process group", stringField("self", link))
	}
}

// catchSignals installs handlers for SIGCHLD and every forwardable signal
// before COMMAND exists (PID 1 gets no signal it has no handler for). A
// signal reaper's caller left ignored stays ignored, for reaper and for
// COMMAND, and is not forwarded; catchSignals returns those.
//
// Catching a signal takes a round trip to a runtime thread, so a goroutine
// does it while the rest of start-up runs: first SIGCHLD and the signals
// that would end reaper uncaught (fatalUncaught), then s.fatalCaught is
// closed, and Run waits for it before it changes anything outside reaper;
// then the others, and s.caught is closed, which run waits for before it
// starts COMMAND. Until caught, such a signal has no handler and the
// runtime drops it; once caught, it waits in s.sigs and reaches COMMAND
// when COMMAND runs.
func (s *supervisor) catchSignals() (ignored []syscall.Signal) {
	inherited := inheritedIgnored()
	var stops, first, rest []os.Signal
	for _, sig := range signals.Forwardable() {
		switch {
		case inherited[sig]:
			ignored = append(ignored, sig)
		case s.cfg.Policy.IsStop(sig):
			stops = append(stops, sig)
		case fatalUncaught[sig]:
			first = append(first, sig)
		default:
			rest = append(rest, sig)
		}
	}
	s.chld = make(chan os.Signal, 1)
	// os/signal drops what a full channel cannot take. A storm of other
	// signals can fill sigs while the forwarder works through it, so stop
	// signals have a channel of their own that only they can fill: they
	// cannot be crowded out, and each one counts (a second one kills).
	s.sigs = make(chan os.Signal, 64)
	s.stops = make(chan os.Signal, 8)
	// Each signal.Notify is a round trip to the runtime's signal goroutine:
	// a goroutine switch from an unlocked goroutine, but from this locked
	// thread a wake-up of another OS thread each time (60 of them took 8 ms).
	// So a goroutine does it, and this thread waits on fatalCaught and
	// caught, once each.
	fatalCaught, allCaught := make(chan struct{}), make(chan struct{})
	go func() {
		notify(s.chld, syscall.SIGCHLD)
		notifySome(s.stops, stops)
		notifySome(s.sigs, first)
		close(fatalCaught)
		notifySome(s.sigs, rest)
		close(allCaught)
	}()
	s.fatalCaught, s.caught = fatalCaught, allCaught
	return ignored
}

// fatalUncaught are the forwardable signals for which the Go runtime ends
// reaper as long as nobody catches them (SIGQUIT, SIGABRT and SIGSTKFLT
// with a crash): caught first, stop signals or not (--rewrite). Until then
// the others are dropped or, for SIGTSTP, SIGTTIN and SIGTTOU, stop reaper.
var fatalUncaught = map[syscall.Signal]bool{
	syscall.SIGHUP: true, syscall.SIGINT: true, syscall.SIGQUIT: true, syscall.SIGTERM: true,
	syscall.SIGABRT: true, syscall.SIGSTKFLT: true,
}

// notifySome relays sigs to c, and nothing when sigs is empty (every stop
// signal rewritten, or left ignored by reaper's caller): signal.Notify with
// no signals would relay every signal.
func notifySome(c chan<- os.Signal, sigs []os.Signal) {
	if len(sigs) > 0 {
		notify(c, sigs...)
	}
}

// step waits for one event and handles it.
func (s *supervisor) step() {
	var exits <-chan []int32
	if s.stop != nil && s.stop.watcher != nil {
		exits = s.stop.watcher.C
	}
	select {
	case <-s.chld:
		s.onChildEvents()
	case sig := <-s.stops:
		s.onSignal(sig.(syscall.Signal))
	case sig := <-s.loop:
		s.onSignal(sig)
		s.loopPending.Add(-1) // after: a signal behind it must not overtake it
	case tokens := <-exits:
		s.stop.noteExits(tokens, time.Now())
	case <-s.graceC:
		s.graceC = nil
		s.log.Info("grace period over", durationField("grace", s.cfg.Grace))
		s.killAll()
	case <-s.timeoutC:
		s.timeoutC = nil
		s.onTimeout()
	case <-s.killC:
		s.killC = nil
		s.giveUp()
	case <-s.cgEmpty:
		s.cgEmpty, s.cgDone = nil, true
		if s.stop != nil {
			s.stop.quiet = true // what is left, if anything, left the leaf: walk /proc for it
		}
	}
	s.advance()
}

// advance moves a stop on after an event.
func (s *supervisor) advance() {
	if s.phase == running || s.phase == done {
		return
	}
	if s.noChildren && (s.cg == nil || s.cgDone) {
		s.finish()
		return
	}
	quiet := s.stop != nil && s.stop.wentQuiet()
	switch {
	case s.phase == stopping && quiet:
		// Every process the stop signalled is gone, yet something is still
		// below reaper: a process the first walk missed, or one forked
		// since. The first kind gets the stop signal now, the second only
		// the SIGKILL at the deadline.
		s.signalMissed()
	case s.phase == killing && (quiet || s.stop.watcher == nil):
		// Whatever is left was forked after the last walk. (Without an exit
		// watcher reaper cannot tell, and walks again at every event.)
		s.killStragglers()
	}
}

// onChildEvents reaps every child that has exited and, when COMMAND was one
// of them, starts a stop (or, with --wait, waits for the rest).
func (s *supervisor) onChildEvents() {
	if !s.reapAll() || s.phase != running {
		return
	}
	s.log.Info("command exited", intField("pid", s.child), stringField("status", describeStatus(s.childStatus)))
	switch {
	case s.noChildren && s.cg == nil:
		// wait4 says ECHILD: as subreaper, reaper would have inherited any
		// descendant still running. Nothing to stop.
		s.finish()
	case s.cfg.Wait:
		s.phase = draining
		s.watchCgroup()
	default:
		s.beginStop(reasonExit, 0)
	}
}

// reapAll drains wait4 until no exited child is left, and reports whether
// COMMAND was among the reaped. It is the only caller of wait4.
func (s *supervisor) reapAll() (commandExited bool) {
	s.reapMu.Lock()
	defer s.reapMu.Unlock()
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
			s.log.Error("wait4 failed", errorField(err))
			return commandExited
		case pid == 0:
			s.noChildren = false
			return commandExited
		case status.Stopped():
			s.childStopped[pid] = true
			if pid == s.child {
				s.onCommandStopped(status.StopSignal())
			}
			continue
		case status.Continued():
			delete(s.childStopped, pid)
			continue
		}
		delete(s.childStopped, pid)
		if s.log.enabled(zapcore.DebugLevel) {
			s.log.Debug("reaped", intField("pid", pid), stringField("status", describeStatus(status)))
		}
		if s.stop != nil {
			s.stop.noteReaped(pid, time.Now())
		}
		if pid == s.child && !s.childGone {
			s.childGone, s.childStatus, commandExited = true, status, true
		}
	}
}

func (s *supervisor) onTimeout() {
	if s.phase != running && s.phase != draining {
		return // a stop is under way: the grace deadline bounds it
	}
	s.timedOut = true
	s.log.Warn("timeout expired: stopping everything", durationField("timeout", s.cfg.Timeout))
	s.beginStop(reasonTimeout, 0)
}

// exitCode is COMMAND's status as a shell reports it (0 for codes listed in
// SuccessExit), ExitTimeout when --timeout fired, ExitInternal when COMMAND
// outlived SIGKILL.
func (s *supervisor) exitCode() int {
	switch {
	case s.timedOut:
		return ExitTimeout
	case s.lostChild:
		return ExitInternal
	}
	code := s.childStatus.ExitStatus()
	if s.childStatus.Signaled() {
		code = 128 + int(s.childStatus.Signal())
	}
	for _, ok := range s.cfg.SuccessExit {
		if code == ok {
			return 0
		}
	}
	return code
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

// sigName makes a signal print by its name in log fields.
type sigName syscall.Signal

func (s sigName) String() string { return signals.Name(syscall.Signal(s)) }
