package reaper

import (
	"fmt"
	"slices"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap/zapcore"
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
	signal   syscall.Signal // the first signal the stop sent (or forwarded) to it
	cmdline  string
	exitedAt time.Time // zero while it lives
	killed   bool      // it got SIGKILL
}

// teardown is the bookkeeping of one stop: who was there, what each one got
// and when it went. The supervisor decides; teardown signals and records.
type teardown struct {
	log        *logger
	reason     stopReason
	received   syscall.Signal // the signal that started the stop, if any
	stopSignal syscall.Signal
	began      time.Time
	ended      time.Time

	procs       []*tracked
	byPID       map[int]*tracked   // the latest tracked process with each pid
	byToken     map[int32]*tracked // processes the watcher still watches
	nextToken   int32
	watcher     *exitWatcher // nil when pidfds cannot be watched
	noWatcher   bool         // creating the watcher failed; do not retry
	startTick   uint64       // the stop's start, in the clock ticks of /proc/PID/stat
	alive       int          // tracked processes not seen to exit yet
	quiet       bool         // alive dropped to 0 since the last walk
	stopSignals int          // stop signals received since the stop began
	// wantCommands reads every tracked process's command line (for the
	// report); otherwise only killed ones are named.
	wantCommands bool
}

func newTeardown(reason stopReason, received, stopSignal syscall.Signal, now time.Time, log *logger) *teardown {
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
func (td *teardown) predates(p process) bool {
	return p.Start <= td.startTick
}

// track starts following the process h refers to: its exit, and its
// command line for the report. track owns h: when the process is tracked
// already, h is closed and the existing record returned.
func (td *teardown) track(h *handle) *tracked {
	if t := td.byPID[h.PID]; t != nil {
		if t.same(h) {
			if t.h.lazy && !h.lazy {
				t.h.process, t.h.lazy = h.process, false
			}
			h.close()
			return t
		}
		td.markExited(t, time.Now()) // its pid was reused: the old one is gone
	}
	t := &tracked{h: h}
	if td.wantCommands {
		t.cmdline = commandLine(h.PID)
	}
	// A lazy handle knows no command name. The "signalled" lines need one,
	// and so does the report for a zombie, which has no command line: its
	// stat is readable until reaper reaps it.
	if h.lazy && (td.log.enabled(zapcore.DebugLevel) || td.wantCommands && t.cmdline == "") {
		h.load()
	}
	td.procs = append(td.procs, t)
	td.byPID[h.PID] = t
	td.alive++
	td.watch(t)
	return t
}

// same reports whether h refers to the process t tracks. A process
// tracked through a lazy handle has no start time to compare, but it is a
// child of reaper's: its pid names it until reaper reaps it, which marks
// it exited.
func (t *tracked) same(h *handle) bool {
	if t.h.lazy {
		return t.exitedAt.IsZero()
	}
	return h.load() && t.h.Start == h.Start
}

// watch registers t's pidfd with the exit watcher, creating it on first use.
func (td *teardown) watch(t *tracked) {
	if t.h.fd < 0 || td.noWatcher {
		return
	}
	if td.watcher == nil {
		w, err := newExitWatcher()
		if err != nil {
			td.log.Debug("exit times will be approximate", errorField(err))
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

// send signals t; the first signal the stop sends is recorded.
func (td *teardown) send(t *tracked, sig syscall.Signal) error {
	err := t.h.signal(sig)
	switch {
	case err == errGone:
		td.markExited(t, time.Now())
	case err != nil:
		td.log.Warn("cannot signal", intField("pid", t.h.PID), stringerField("signal", sigName(sig)), errorField(err))
	default:
		if t.signal == 0 {
			t.signal = sig
		}
		if td.log.enabled(zapcore.DebugLevel) {
			td.log.Debug("signalled", intField("pid", t.h.PID), stringField("comm", t.h.Comm), stringerField("signal", sigName(sig)))
		}
	}
	return err
}

// kill sends SIGKILL to the process h refers to unless it was killed
// already, with a warning that names it. It owns h.
func (td *teardown) kill(h *handle) {
	t := td.track(h)
	if t.killed || !t.exitedAt.IsZero() {
		return
	}
	t.refreshCommand() // before it dies: it may have exec'd since it was first seen
	if td.send(t, syscall.SIGKILL) != nil {
		return
	}
	t.killed = true
	td.log.Warn("killed", intField("pid", t.h.PID), stringField("command", t.describe()))
}

// killedAll records that victims were SIGKILLed at once (cgroup.kill),
// with a warning for each. Their command lines must have been read before.
func (td *teardown) killedAll(victims []*tracked) {
	for _, t := range victims {
		t.killed = true
		td.log.Warn("killed", intField("pid", t.h.PID), stringField("command", t.describe()))
	}
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
	took := now.Sub(td.began)
	if took >= time.Millisecond {
		took = took.Round(time.Millisecond)
	} else {
		took = took.Round(time.Microsecond) // not "0s"
	}
	td.log.Info(fmt.Sprintf("teardown: %s, %d exited after %s, %d killed, %s",
		plural(len(td.procs), "descendant"), len(td.procs)-killed, td.sentNames(), killed, took))
}

// sentNames names the signals the stop sent first to the processes that
// exited without SIGKILL: the stop signal, and a signal forwarded to
// COMMAND's group when a signal began the stop ("SIGHUP or SIGTERM").
func (td *teardown) sentNames() string {
	var sent []syscall.Signal
	for _, t := range td.procs {
		if !t.killed && t.signal != 0 && !slices.Contains(sent, t.signal) {
			sent = append(sent, t.signal)
		}
	}
	if len(sent) == 0 {
		return sigName(td.stopSignal).String()
	}
	slices.Sort(sent)
	names := make([]string, len(sent))
	for i, sig := range sent {
		names[i] = sigName(sig).String()
	}
	return strings.Join(names, " or ")
}

// plural is n and noun, with an s unless n is 1.
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
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

// refreshCommand reads the command line again, keeping the old one if the
// process has none to read now.
func (t *tracked) refreshCommand() {
	if cmdline := commandLine(t.h.PID); cmdline != "" {
		t.cmdline = cmdline
	}
}

// describe returns the command line, or the command name when the process
// had none to read (a kernel thread would have none; a zombie neither).
func (t *tracked) describe() string {
	if t.cmdline != "" {
		return t.cmdline
	}
	// Once it has exited, its pid may name another process.
	if t.h.lazy && (!t.exitedAt.IsZero() || !t.h.load()) {
		return "[?]"
	}
	return "[" + t.h.Comm + "]"
}
