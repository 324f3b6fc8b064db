package reaper

import (
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/reaper-init/reaper/reaper/logs"
	"github.com/reaper-init/reaper/reaper/procfs"
	"github.com/reaper-init/reaper/signals"
)

// signalNotify is signal.Notify; a variable so that nothing else in the package
// calls os/signal.
var signalNotify = signal.Notify

// catcher holds the channels os/signal delivers reaper's caught signals
// to, and what came before COMMAND existed.
type catcher struct {
	chld  chan os.Signal // SIGCHLD alone: one pending is enough, reaping drains
	stops chan os.Signal // the stop requests
	sigs  chan os.Signal // every other caught signal, read by the forwarder once COMMAND runs
	// fatalCaught is closed once no signal can end reaper uncaught; all
	// once every signal reaper forwards is caught.
	fatalCaught, all <-chan struct{}
	ignored          []syscall.Signal // left ignored by reaper's caller: not caught, not forwarded
	early            syscall.Signal   // a stop request that came before COMMAND started
	log              *logs.Logger
}

// catchSignals installs handlers for SIGCHLD and every forwardable signal
// before COMMAND exists (PID 1 gets no signal it has no handler for). A
// signal reaper's caller left ignored stays ignored, for reaper and for
// COMMAND, and is not forwarded.
//
// Catching a signal takes a round trip to a runtime thread, so a goroutine
// does it while the rest of start-up runs: first SIGCHLD and the signals
// that would end reaper uncaught (fatalUncaught), then fatalCaught is
// closed, and Run waits for it before it changes anything outside reaper;
// then the others, and all is closed, which run waits for before it starts
// COMMAND. Until caught, such a signal has no handler and the runtime drops
// it; once caught, it waits in sigs and reaches COMMAND when COMMAND runs.
func catchSignals(policy signals.Policy) *catcher {
	inherited := inheritedIgnored()
	c := &catcher{
		chld: make(chan os.Signal, 1),
		// os/signal drops what a full channel cannot take. A storm of other
		// signals can fill sigs while the forwarder works through it, so
		// stop requests have a channel of their own that only they can
		// fill: they cannot be crowded out, and each one counts (a second
		// one kills).
		sigs:  make(chan os.Signal, 64),
		stops: make(chan os.Signal, 8),
	}
	var stops, first, rest []os.Signal
	for _, sig := range signals.Forwardable() {
		switch {
		case inherited[sig]:
			c.ignored = append(c.ignored, sig)
		case policy.IsStop(sig):
			stops = append(stops, sig)
		case fatalUncaught[sig]:
			first = append(first, sig)
		default:
			rest = append(rest, sig)
		}
	}
	// Each signal.Notify is a round trip to the runtime's signal goroutine:
	// a goroutine switch from an unlocked goroutine, but from a locked
	// thread a wake-up of another OS thread each time (60 of them took
	// 8 ms). So a goroutine does it, and the locked thread waits on
	// fatalCaught and all, once each.
	fatalCaught, all := make(chan struct{}), make(chan struct{})
	go func() {
		signalNotify(c.chld, syscall.SIGCHLD)
		notifySome(c.stops, stops)
		notifySome(c.sigs, first)
		close(fatalCaught)
		notifySome(c.sigs, rest)
		close(all)
	}()
	c.fatalCaught, c.all = fatalCaught, all
	return c
}

// fatalUncaught are the forwardable signals for which the Go runtime ends
// reaper as long as nobody catches them (SIGQUIT, SIGABRT, SIGSTKFLT and
// the fault signals sent with kill(2) with a crash): caught first, stop
// requests or not. Until then the others are dropped or, for SIGTSTP,
// SIGTTIN and SIGTTOU, stop reaper.
var fatalUncaught = map[syscall.Signal]bool{
	syscall.SIGHUP: true, syscall.SIGINT: true, syscall.SIGQUIT: true, syscall.SIGTERM: true,
	syscall.SIGABRT: true, syscall.SIGSTKFLT: true,
	syscall.SIGILL: true, syscall.SIGTRAP: true, syscall.SIGBUS: true, syscall.SIGFPE: true,
	syscall.SIGSEGV: true, syscall.SIGSYS: true,
}

// notifySome relays sigs to c, and nothing when sigs is empty (every stop
// request left ignored by reaper's caller, say): signal.Notify with no
// signals would relay every signal.
func notifySome(c chan<- os.Signal, sigs []os.Signal) {
	if len(sigs) > 0 {
		signalNotify(c, sigs...)
	}
}

// pause waits d, or less when a stop request arrives before COMMAND exists:
// it then records the signal in early and returns true. Other signals
// have nobody to go to yet, and are dropped.
func (c *catcher) pause(d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case <-timer.C:
			return false
		case sig := <-c.stops:
			c.earlyStop(sig.(syscall.Signal))
			return true
		case sig := <-c.sigs:
			c.log.Debug("no COMMAND yet: not forwarded", logs.Signal("signal", sig.(syscall.Signal)))
		}
	}
}

// stopRequested reports, without waiting, whether a stop request arrived
// before COMMAND exists (see pause).
func (c *catcher) stopRequested() bool {
	for {
		select {
		case sig := <-c.stops:
			c.earlyStop(sig.(syscall.Signal))
			return true
		case sig := <-c.sigs:
			c.log.Debug("no COMMAND yet: not forwarded", logs.Signal("signal", sig.(syscall.Signal)))
		default:
			return c.early != 0
		}
	}
}

// earlyStop records a stop request that came before COMMAND started.
func (c *catcher) earlyStop(sig syscall.Signal) {
	c.log.Info("stop signal before COMMAND started: not starting it", logs.Signal("signal", sig))
	c.early = sig
}

// The terminal driver answers a foreground change (or a write) by a
// background process with SIGTTOU, and reaper catches SIGTTOU to forward it:
// it would take its own for one sent from outside, and the driver would
// repeat the interrupted call for ever. So the thread that hands the
// terminal over, the event loop's, keeps SIGTTOU blocked: the driver then
// lets it go ahead without a signal, and a SIGTTOU sent to the process from
// outside is delivered to another thread and forwarded as usual.
var threadSignals = func() *unix.Sigset_t {
	var set unix.Sigset_t
	set.Val[(unix.SIGTTOU-1)/64] |= 1 << ((unix.SIGTTOU - 1) % 64)
	return &set
}()

// blockThreadSignals blocks SIGTTOU on the calling thread, which must be
// locked to its goroutine, and returns the mask the thread had before.
func blockThreadSignals() unix.Sigset_t {
	var old unix.Sigset_t
	unix.PthreadSigmask(unix.SIG_BLOCK, threadSignals, &old)
	return old
}

// setThreadMask gives the calling thread the signal mask mask.
func setThreadMask(mask unix.Sigset_t) {
	unix.PthreadSigmask(unix.SIG_SETMASK, &mask, nil)
}

// inheritedIgnored returns the signals whose disposition is SIG_IGN right
// now, from SigIgn in /proc/self/status. Read at start-up, before reaper
// installs handlers of its own, it tells which signals reaper's caller left
// ignored, where the Go runtime kept them so: SIGHUP and SIGINT (as
// signal.Ignored also reports), and the job-control signals SIGTSTP, SIGTTIN,
// SIGTTOU and SIGCONT, for which the runtime installs no handler of its own.
// For the other signals the runtime has already replaced an inherited
// SIG_IGN with its handler before any Go code runs; nothing can recover it.
func inheritedIgnored() map[syscall.Signal]bool {
	data, err := os.ReadFile(procfs.Root + "/self/status")
	if err != nil {
		return nil
	}
	mask, ok := procfs.StatusMask(data, "SigIgn:")
	if !ok {
		return nil
	}
	ignored := map[syscall.Signal]bool{}
	for sig := syscall.Signal(1); sig <= 64; sig++ {
		if mask&(1<<(sig-1)) != 0 {
			ignored[sig] = true
		}
	}
	return ignored
}
