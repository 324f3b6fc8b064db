package reaper

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
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
// process stuck in uninterruptible sleep outlives it.
const killWait = 10 * time.Second

// supervisor is the event loop's state. Only the goroutine in Run touches it.
type supervisor struct {
	cfg  Config
	log  *zap.Logger
	self int
	sigs chan os.Signal

	child       int  // COMMAND's pid, also its process group id
	childGone   bool // COMMAND was reaped: its pid and group id may be reused
	childStatus unix.WaitStatus
	noChildren  bool // the last wait4 said ECHILD: nothing is left below reaper
	startErr    *StartError

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
// good (COMMAND's parent-death signal is tied to the thread that forked it).
func Run(cfg Config) int {
	runtime.LockOSThread()
	if cfg.Stderr == nil {
		cfg.Stderr = os.Stderr
	}
	if cfg.StopSignal == 0 {
		cfg.StopSignal = syscall.SIGTERM
	}
	log, err := NewLogger(cfg.Stderr, cfg.LogFormat, cfg.Verbosity)
	if err != nil {
		fmt.Fprintf(cfg.Stderr, "reaper: %v\n", err)
		return ExitUsage
	}
	defer log.Sync()
	s := &supervisor{cfg: cfg, log: log, self: os.Getpid()}
	return s.run()
}

func (s *supervisor) run() int {
	s.becomeSubreaper()
	s.catchSignals()
	pid, err := spawn(s.cfg.Command, spawnOptions{foreground: stdinIsTerminal()})
	if err != nil {
		return s.startFailed(err)
	}
	s.child = pid
	s.log.Info("started", zap.Int("pid", pid), zap.String("command", strings.Join(s.cfg.Command, " ")))
	if s.cfg.Timeout > 0 {
		s.timeoutTimer = time.NewTimer(s.cfg.Timeout)
		s.timeoutC = s.timeoutTimer.C
	}
	for s.phase != done {
		s.step()
	}
	code := s.exitCode()
	s.writeReport(code)
	return code
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
		s.log.Warn("cannot become a child subreaper: orphans will escape to init", zap.Error(err))
	}
}

// catchSignals installs handlers for SIGCHLD and every forwardable signal
// before COMMAND exists (PID 1 gets no signal it has no handler for). A
// signal reaper's caller left ignored stays ignored, for reaper and for
// COMMAND, and is not forwarded.
func (s *supervisor) catchSignals() {
	ignored := inheritedIgnored()
	caught := []os.Signal{syscall.SIGCHLD}
	for _, sig := range signals.Forwardable() {
		if ignored[sig] || signal.Ignored(sig) {
			s.log.Debug("inherited as ignored: not forwarded", zap.Stringer("signal", sigName(sig)))
			continue
		}
		caught = append(caught, sig)
	}
	// The runtime merges repeats of a standard signal anyway; the buffer only
	// has to cover bursts of different ones.
	s.sigs = make(chan os.Signal, 128)
	signal.Notify(s.sigs, caught...)
}

// step waits for one event and handles it.
func (s *supervisor) step() {
	var exits <-chan []int32
	if s.stop != nil && s.stop.watcher != nil {
		exits = s.stop.watcher.C
	}
	select {
	case sig := <-s.sigs:
		s.onSignal(sig.(syscall.Signal))
	case tokens := <-exits:
		s.stop.noteExits(tokens, time.Now())
	case <-s.graceC:
		s.graceC = nil
		s.log.Info("grace period over", zap.Duration("grace", s.cfg.Grace))
		s.killAll()
	case <-s.timeoutC:
		s.timeoutC = nil
		s.onTimeout()
	case <-s.killC:
		s.killC = nil
		s.giveUp()
	}
	switch {
	case s.phase > running && s.phase < done && s.noChildren:
		s.finish()
	case s.phase == stopping && s.stop.wentQuiet():
		// Every process the stop signalled is gone but something is still
		// below reaper: a process the first walk missed, or one forked
		// since. The first kind gets the stop signal now, the second only
		// the SIGKILL at the deadline.
		s.signalMissed()
	case s.phase == killing && (s.stop.watcher == nil || s.stop.wentQuiet()):
		// Whatever is left was forked after the last walk (without an exit
		// watcher reaper cannot tell, and walks again at every event).
		s.killStragglers()
	}
}

func (s *supervisor) onSignal(sig syscall.Signal) {
	stop := s.cfg.Policy.IsStop(sig)
	switch {
	case sig == syscall.SIGCHLD:
		s.onChildEvents()
	case stop && (s.phase == running || s.phase == draining):
		s.beginStop(reasonSignal, sig) // forwards sig itself, after its walk
	case stop && s.phase == stopping:
		s.forward(sig)
		s.log.Info("second stop signal: killing now", zap.Stringer("signal", sigName(sig)))
		s.killAll()
	default:
		s.forward(sig)
	}
}

// onChildEvents reaps every child that has exited, then moves the state
// machine on.
func (s *supervisor) onChildEvents() {
	if s.reapAll() && s.phase == running {
		s.log.Info("command exited", zap.Int("pid", s.child), zap.String("status", describeStatus(s.childStatus)))
		if s.cfg.Wait {
			s.phase = draining
		} else {
			s.beginStop(reasonExit, 0)
		}
	}
}

// reapAll drains wait4 until no exited child is left, and reports whether
// COMMAND was among the reaped. It is the only caller of wait4.
func (s *supervisor) reapAll() (commandExited bool) {
	for {
		var status unix.WaitStatus
		pid, err := unix.Wait4(-1, &status, unix.WNOHANG, nil)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.ECHILD):
			s.noChildren = true
			return commandExited
		case err != nil:
			s.log.Error("wait4 failed", zap.Error(err))
			return commandExited
		case pid == 0:
			s.noChildren = false
			return commandExited
		}
		if ce := s.log.Check(zap.DebugLevel, "reaped"); ce != nil {
			ce.Write(zap.Int("pid", pid), zap.String("status", describeStatus(status)))
		}
		if s.stop != nil {
			s.stop.noteReaped(pid, time.Now())
		}
		if pid == s.child && !s.childGone {
			s.childGone, s.childStatus, commandExited = true, status, true
		}
	}
}

// forward passes a received signal on, after rewrites, to COMMAND's group
// or to COMMAND alone. COMMAND's pid and group id stay reserved until reaper
// reaps it, so kill(2) is safe until then; afterwards the group's remaining
// members are signalled one by one through pidfds.
func (s *supervisor) forward(sig syscall.Signal) {
	out, ok := s.cfg.Policy.Forward(sig)
	if !ok {
		s.log.Debug("dropped", zap.Stringer("signal", sigName(sig)))
		return
	}
	group := s.cfg.Policy.Target == signals.Group
	var err error
	switch {
	case !s.childGone && group:
		err = unix.Kill(-s.child, out)
	case !s.childGone:
		err = unix.Kill(s.child, out)
	case group:
		err = s.signalGroupMembers(out)
	default:
		s.log.Debug("not forwarded: command has exited", zap.Stringer("signal", sigName(sig)))
		return
	}
	if err != nil {
		s.log.Warn("cannot forward signal", zap.Stringer("signal", sigName(out)), zap.Error(err))
		return
	}
	if ce := s.log.Check(zap.DebugLevel, "forwarded"); ce != nil {
		ce.Write(zap.Stringer("received", sigName(sig)), zap.Stringer("signal", sigName(out)),
			zap.String("to", s.cfg.Policy.Target.String()), zap.Int("pid", s.child))
	}
}

// signalGroupMembers signals the descendants still in COMMAND's process group
// after COMMAND itself is gone.
func (s *supervisor) signalGroupMembers(sig syscall.Signal) error {
	procs, err := descendants(s.self)
	if err != nil {
		return err
	}
	for _, p := range procs {
		if p.PGID != s.child {
			continue
		}
		if h, err := openHandle(p); err == nil {
			h.signal(sig)
			h.close()
		}
	}
	return nil
}

func (s *supervisor) onTimeout() {
	s.timedOut = true
	s.log.Warn("timeout expired: stopping everything", zap.Duration("timeout", s.cfg.Timeout))
	if s.phase == running || s.phase == draining {
		s.beginStop(reasonTimeout, 0)
	}
}

// beginStop sends the stop signal to every descendant at once and starts the
// one grace deadline of this stop. A stop that begins with a signal forwards
// that signal as usual, and the processes it reaches get nothing more. The
// walk of the tree comes first: once the signal is out, processes exit and
// their orphans move up to reaper while a walk could miss them.
func (s *supervisor) beginStop(reason stopReason, received syscall.Signal) {
	s.phase = stopping
	s.stop = newTeardown(reason, received, s.cfg.StopSignal, time.Now(), s.log)
	procs, err := descendants(s.self)
	if err != nil {
		s.log.Error("cannot list descendants", zap.Error(err))
	}
	if reason == reasonSignal {
		s.forward(received)
	}
	for _, p := range procs {
		sig := s.cfg.StopSignal
		if reason == reasonSignal && s.reachedByForward(p) {
			sig, _ = s.cfg.Policy.Forward(received)
			s.stop.track(p, sig, false)
			continue
		}
		s.stop.track(p, sig, true)
	}
	s.log.Info("stopping", zap.String("reason", reason.String()), zap.Int("descendants", len(procs)),
		zap.Duration("grace", s.cfg.Grace))
	if s.cfg.Grace <= 0 {
		s.killAll()
		return
	}
	s.graceTimer = time.NewTimer(s.cfg.Grace)
	s.graceC = s.graceTimer.C
}

// reachedByForward reports whether a forwarded signal already went to p.
func (s *supervisor) reachedByForward(p Process) bool {
	if s.cfg.Policy.Target == signals.Group {
		return p.PGID == s.child
	}
	return p.PID == s.child && !s.childGone
}

// signalMissed sends the stop signal to descendants the stop has not
// tracked yet and that were already running when it began.
func (s *supervisor) signalMissed() {
	procs, err := descendants(s.self)
	if err != nil {
		s.log.Error("cannot list descendants", zap.Error(err))
	}
	for _, p := range procs {
		if s.stop.byPID[p.PID] == nil && s.stop.predates(p) {
			s.stop.track(p, s.cfg.StopSignal, true)
		}
	}
}

// killAll ends the grace period: SIGKILL to every descendant, then again to
// each one that appears until nothing is left.
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
func (s *supervisor) killStragglers() {
	procs, err := descendants(s.self)
	if err != nil {
		s.log.Error("cannot list descendants", zap.Error(err))
	}
	for _, p := range procs {
		s.stop.kill(p, time.Now())
	}
}

// giveUp is called when SIGKILLed processes did not go within killWait.
func (s *supervisor) giveUp() {
	procs, _ := descendants(s.self)
	pids := make([]int, len(procs))
	for i, p := range procs {
		pids[i] = p.PID
	}
	s.log.Error("processes survive SIGKILL (uninterruptible sleep?); giving up on them", zap.Ints("pids", pids))
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

// exitCode is COMMAND's status as a shell reports it, ExitTimeout when
// --timeout fired, and 0 for codes listed in SuccessExit.
func (s *supervisor) exitCode() int {
	code := 0
	switch {
	case s.timedOut:
		return ExitTimeout
	case s.childStatus.Signaled():
		code = 128 + int(s.childStatus.Signal())
	default:
		code = s.childStatus.ExitStatus()
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
