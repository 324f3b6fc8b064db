package supervisor

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

// Signals are the signals reaper catches: the channels os/signal delivers
// them to, and what came before COMMAND existed. Make them with
// CatchSignals, first thing in main.
type Signals struct {
	chld  chan os.Signal // SIGCHLD alone: one pending is enough, reaping drains
	stops chan os.Signal // the stop requests
	sigs  chan os.Signal // every other caught signal, read by the forwarder once COMMAND runs
	// fatalCaught is closed once no signal can end reaper uncaught (and
	// ignored is set); all once every signal reaper forwards is caught.
	fatalCaught, all <-chan struct{}
	// ignored are the signals reaper's caller left ignored: caught and
	// forwarded all the same, and ignored by COMMAND when it starts.
	ignored []syscall.Signal
	policy  signals.Policy // which are stop requests (see route)
	early   syscall.Signal // a stop request that came before COMMAND started
	log     *logs.Logger
}

// defaultStop is the stop request of the default policy: catching starts
// before the command line is read, and routes SIGTERM to the stop
// requests' channel, every other signal to the others' (see route).
const defaultStop = syscall.SIGTERM

// CatchSignals starts catching SIGCHLD and every signal reaper forwards
// (PID 1 gets no signal it has no handler for). A signal reaper's caller
// left ignored (nohup's SIGHUP, a script's background job's SIGINT) is
// caught and forwarded too, as tini and dumb-init do: a COMMAND that
// installs its own handler gets it, as it would without reaper; COMMAND
// starts with it ignored, as it would without reaper. Call it first thing
// in main, and give the result to Run in Config.Signals.
//
// Catching a signal takes a round trip to a runtime thread (60 of them
// took 3 ms), so a goroutine does it while the rest of start-up runs,
// reading the command line included: first SIGCHLD and the signals that
// would end reaper uncaught (fatalUncaught), then fatalCaught is closed,
// and Run waits for it before it changes anything outside reaper; then the
// others, and all is closed, which Run waits for before it starts COMMAND.
// Until caught, such a signal has no handler and the runtime drops it;
// once caught, it waits in its channel and reaches COMMAND when COMMAND
// runs.
func CatchSignals() *Signals {
	c := &Signals{
		chld: make(chan os.Signal, 1),
		// os/signal drops what a full channel cannot take. A storm of other
		// signals can fill sigs while the forwarder works through it, so
		// stop requests have a channel of their own that only they can
		// fill: they cannot be crowded out, and each one counts (a second
		// one kills).
		sigs:  make(chan os.Signal, 64),
		stops: make(chan os.Signal, 8),
		log:   logs.Discard(),
	}
	fatalCaught, all := make(chan struct{}), make(chan struct{})
	c.fatalCaught, c.all = fatalCaught, all
	go func() {
		inherited := inheritedIgnored()
		var first, rest []os.Signal
		for _, sig := range signals.Forwardable() {
			switch {
			case inherited[sig]: // not fatal while it stays ignored
				c.ignored = append(c.ignored, sig)
				rest = append(rest, sig)
			case fatalUncaught[sig]:
				first = append(first, sig)
			default:
				rest = append(rest, sig)
			}
		}
		signalNotify(c.chld, syscall.SIGCHLD)
		c.notify(first)
		close(fatalCaught)
		c.notify(rest)
		close(all)
	}()
	return c
}

// notify catches sigs: the default policy's stop request on stops, the
// others on sigs.
func (c *Signals) notify(sigs []os.Signal) {
	for _, sig := range sigs {
		if sig == defaultStop {
			signalNotify(c.stops, sig)
		} else {
			signalNotify(c.sigs, sig)
		}
	}
}

// route makes policy's stop requests reach the stops channel and every
// other signal the sigs channel, where they differ from the default
// policy: a signal caught on one more channel (Notify again, which costs
// no round trip once the signal is caught). Such a signal then arrives on
// both, and each reader passes over what is not its own (isStop). What
// came before is moved to where the policy says it goes (see reroute).
// Call it once fatalCaught is closed.
func (c *Signals) route(policy signals.Policy) {
	c.policy = policy
	for _, sig := range signals.Forwardable() {
		switch {
		case policy.IsStop(sig) && sig != defaultStop:
			signalNotify(c.stops, sig)
		case !policy.IsStop(sig) && sig == defaultStop:
			signalNotify(c.sigs, sig)
		}
	}
	c.reroute()
}

// reroute moves the signals waiting in the channels to those the policy
// gives them: one caught before route went where the default policy sends
// it, where its new reader would pass over it (a SIGINT with --stop-on=INT
// would be lost). One caught since route went to both channels, and
// counts once.
func (c *Signals) reroute() {
	var waiting []syscall.Signal
	seen := [2]map[syscall.Signal]int{{}, {}}
	// Until a pass finds both empty: a signal that reaches both channels
	// while sigs is drained and stops is not yet is found in the next pass
	// in sigs, and counted once still.
	for more := true; more; {
		more = false
		for i, ch := range []chan os.Signal{c.sigs, c.stops} {
		drain:
			for {
				select {
				case sig := <-ch:
					waiting = append(waiting, sig.(syscall.Signal))
					seen[i][sig.(syscall.Signal)]++
					more = true
				default:
					break drain
				}
			}
		}
	}
	placed := map[syscall.Signal]int{}
	for _, sig := range waiting {
		if placed[sig] == max(seen[0][sig], seen[1][sig]) {
			continue
		}
		placed[sig]++
		ch := c.sigs
		if c.isStop(sig) {
			ch = c.stops
		}
		select {
		case ch <- sig:
		default: // as os/signal does with a full channel
		}
	}
}

// isStop reports whether sig is a stop request.
func (c *Signals) isStop(sig syscall.Signal) bool { return c.policy.IsStop(sig) }

// fatalUncaught are the forwardable signals for which the Go runtime ends
// reaper as long as nobody catches them (SIGQUIT, SIGABRT, SIGSTKFLT or, on
// mips, SIGEMT, and the fault signals sent with kill(2) with a crash):
// caught first, stop requests or not. Until then the others are dropped
// or, for SIGTSTP, SIGTTIN and SIGTTOU, stop reaper.
var fatalUncaught = func() map[syscall.Signal]bool {
	fatal := map[syscall.Signal]bool{}
	for _, name := range []string{"SIGHUP", "SIGINT", "SIGQUIT", "SIGTERM", "SIGABRT",
		"SIGSTKFLT", "SIGEMT", // each exists on some architectures only
		"SIGILL", "SIGTRAP", "SIGBUS", "SIGFPE", "SIGSEGV", "SIGSYS"} {
		if sig := unix.SignalNum(name); sig != 0 {
			fatal[sig] = true
		}
	}
	return fatal
}()

// pause waits d, or less when a stop request arrives before COMMAND exists:
// it then records the signal in early and returns true. Other signals
// have nobody to go to yet, and are dropped.
func (c *Signals) pause(d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case <-timer.C:
			return false
		case sig := <-c.stops:
			if c.earlyStop(sig.(syscall.Signal)) {
				return true
			}
		case sig := <-c.sigs:
			c.dropEarly(sig.(syscall.Signal))
		}
	}
}

// stopRequested reports, without waiting, whether a stop request arrived
// before COMMAND exists (see pause).
func (c *Signals) stopRequested() bool {
	for {
		select {
		case sig := <-c.stops:
			if c.earlyStop(sig.(syscall.Signal)) {
				return true
			}
		case sig := <-c.sigs:
			c.dropEarly(sig.(syscall.Signal))
		default:
			return c.early != 0
		}
	}
}

// earlyStop records a stop request that came before COMMAND started, and
// reports whether sig was one.
func (c *Signals) earlyStop(sig syscall.Signal) bool {
	if !c.isStop(sig) {
		return false // it came on the sigs channel too: dropped there
	}
	c.log.Info("stop signal before COMMAND started: not starting it", logs.Signal("signal", sig))
	c.early = sig
	return true
}

// dropEarly drops a signal that came before COMMAND started.
func (c *Signals) dropEarly(sig syscall.Signal) {
	if !c.isStop(sig) {
		c.log.Debug("no COMMAND yet: not forwarded", logs.Signal("signal", sig))
	}
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
	var buf [2048]byte
	data, err := procfs.ReadFile(procfs.Root+"/self/status", buf[:])
	if err != nil {
		return nil
	}
	mask, ok := procfs.StatusMask(data, "SigIgn:")
	if !ok {
		return nil
	}
	ignored := map[syscall.Signal]bool{}
	for sig := syscall.Signal(1); sig <= signals.CatchMax; sig++ {
		if mask&(1<<(sig-1)) != 0 {
			ignored[sig] = true
		}
	}
	return ignored
}
