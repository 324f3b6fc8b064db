package reaper

import (
	"fmt"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// stopReason says what started a stop.
type stopReason int

const (
	reasonExit    stopReason = iota // COMMAND exited
	reasonSignal                    // reaper received a stop signal
	reasonTimeout                   // --timeout expired
)

func (r stopReason) String() string {
	return [...]string{"command exited", "signal", "timeout"}[r]
}

// tracked is one descendant seen during a stop.
type tracked struct {
	h        *handle
	token    int32          // its key in the exit watcher
	signal   syscall.Signal // the first signal the stop sent it; 0 if found only when killing
	cmdline  string
	exitedAt time.Time // zero while it lives
	killed   bool      // it got SIGKILL
}

// teardown is the bookkeeping of one stop: who was there, what each one got
// and when it went. The supervisor decides; teardown signals and records.
type teardown struct {
	log        *zap.Logger
	reason     stopReason
	received   syscall.Signal // the signal that started the stop, if any
	stopSignal syscall.Signal
	began      time.Time
	ended      time.Time

	procs     []*tracked
	byPID     map[int]*tracked   // the latest tracked process with each pid
	byToken   map[int32]*tracked // processes the watcher still watches
	nextToken int32
	watcher   *exitWatcher // nil when pidfds cannot be watched
	noWatcher bool         // creating the watcher failed; do not retry
	startTick uint64       // the stop's start, in the clock ticks of /proc/PID/stat
	alive     int          // tracked processes not seen to exit yet
	quiet     bool         // alive dropped to 0 since the last walk
}

func newTeardown(reason stopReason, received, stopSignal syscall.Signal, now time.Time, log *zap.Logger) *teardown {
	return &teardown{
		log: log, reason: reason, received: received, stopSignal: stopSignal, began: now,
		startTick: bootTicks(), byPID: map[int]*tracked{}, byToken: map[int32]*tracked{},
	}
}

// clockTicks is USER_HZ, the unit of start times in /proc/PID/stat: 100 on
// every Linux architecture.
const clockTicks = 100

// bootTicks returns the time since boot in the unit of /proc/PID/stat.
func bootTicks() uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return uint64(ts.Nano()) / (uint64(time.Second) / clockTicks)
}

// predates reports whether p was already running when the stop began (or
// started in the same clock tick).
func (td *teardown) predates(p Process) bool {
	return p.Start <= td.startTick
}

// track starts following p. With send, it also sends sig to p (and SIGCONT
// when p is stopped, so that it can act on sig); otherwise sig is recorded
// as already delivered.
func (td *teardown) track(p Process, sig syscall.Signal, send bool) *tracked {
	if t := td.byPID[p.PID]; t != nil && t.h.Start == p.Start {
		return t
	} else if t != nil {
		td.markExited(t, time.Now()) // its pid was reused: the old one is gone
	}
	h, err := openHandle(p)
	if err != nil {
		td.log.Debug("not tracked", zap.Int("pid", p.PID), zap.Error(err))
		return nil
	}
	t := &tracked{h: h, signal: sig, cmdline: commandLine(p.PID)}
	td.procs = append(td.procs, t)
	td.alive++
	td.byPID[p.PID] = t
	td.watch(t)
	if send && sig != 0 {
		td.send(t, sig)
		if p.State == 'T' && sig != syscall.SIGKILL {
			td.send(t, syscall.SIGCONT)
		}
	}
	return t
}

// watch registers t's pidfd with the exit watcher, creating it on first use.
func (td *teardown) watch(t *tracked) {
	if t.h.fd < 0 || td.noWatcher {
		return
	}
	if td.watcher == nil {
		w, err := newExitWatcher()
		if err != nil {
			td.log.Debug("exit times will be approximate", zap.Error(err))
			td.noWatcher = true
			return
		}
		td.watcher = w
	}
	td.nextToken++
	if err := td.watcher.add(t.h.fd, td.nextToken); err != nil {
		return
	}
	t.token = td.nextToken
	td.byToken[t.token] = t
}

func (td *teardown) send(t *tracked, sig syscall.Signal) {
	err := t.h.signal(sig)
	switch {
	case err == errGone:
		td.markExited(t, time.Now())
	case err != nil:
		td.log.Warn("cannot signal", zap.Int("pid", t.h.PID), zap.Stringer("signal", sigName(sig)), zap.Error(err))
	default:
		if ce := td.log.Check(zap.DebugLevel, "signalled"); ce != nil {
			ce.Write(zap.Int("pid", t.h.PID), zap.String("comm", t.h.Comm), zap.Stringer("signal", sigName(sig)))
		}
	}
}

// kill sends SIGKILL to p unless it was killed already.
func (td *teardown) kill(p Process, now time.Time) {
	t := td.track(p, 0, false)
	if t == nil || t.killed || !t.exitedAt.IsZero() {
		return
	}
	t.killed = true
	td.log.Warn("killed", zap.Int("pid", p.PID), zap.String("command", t.describe()))
	td.send(t, syscall.SIGKILL)
}

// wentQuiet reports, once, that every process the stop tracks has exited
// (as the exit watcher saw it) since the last call. If reaper still has
// children then, they are processes the last walk of the tree did not see.
func (td *teardown) wentQuiet() bool {
	q := td.quiet
	td.quiet = false
	return q
}

// noteExits records the processes the exit watcher saw exit.
func (td *teardown) noteExits(tokens []int32, now time.Time) {
	for _, token := range tokens {
		if t := td.byToken[token]; t != nil {
			td.markExited(t, now)
		}
	}
}

// noteReaped records that reaper reaped pid.
func (td *teardown) noteReaped(pid int, now time.Time) {
	if t := td.byPID[pid]; t != nil {
		td.markExited(t, now)
	}
}

func (td *teardown) markExited(t *tracked, now time.Time) {
	if !t.exitedAt.IsZero() {
		return
	}
	t.exitedAt = now
	td.alive--
	td.quiet = td.alive == 0
	delete(td.byToken, t.token)
	t.h.close()
}

// finish closes what the stop opened, marks everything gone and logs the
// summary line.
func (td *teardown) finish(now time.Time) {
	td.ended = now
	for _, t := range td.procs {
		td.markExited(t, now)
	}
	if td.watcher != nil {
		td.watcher.stop()
		td.watcher = nil
	}
	killed := td.killedCount()
	td.log.Info(fmt.Sprintf("teardown: %d descendants, %d exited after %s, %d killed, %s",
		len(td.procs), len(td.procs)-killed, sigName(td.stopSignal), killed, now.Sub(td.began).Round(time.Millisecond)))
}

func (td *teardown) killedCount() int {
	n := 0
	for _, t := range td.procs {
		if t.killed {
			n++
		}
	}
	return n
}

// describe returns the command line, or the command name when the process
// had none to read (a kernel thread would have none; a zombie neither).
func (t *tracked) describe() string {
	if t.cmdline != "" {
		return t.cmdline
	}
	return "[" + t.h.Comm + "]"
}
