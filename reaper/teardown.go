package reaper

import (
	"fmt"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/reaper-init/reaper/reaper/handle"
	"github.com/reaper-init/reaper/reaper/logs"
	"github.com/reaper-init/reaper/reaper/procfs"
	"github.com/reaper-init/reaper/reaper/stop"
	"github.com/reaper-init/reaper/signals"
)

// The actions of the stop machine, carried out on the tree.

// signalTree sends the stop signal to every descendant at once, and opens
// the record of the stop. A stop that began with a request forwards it as
// usual, and the processes it reached get nothing more.
//
// The walk and the handles come first, the signals after: once a signal
// is out, processes exit, their orphans move up to reaper while a walk
// could miss them, and a process that is already gone cannot be tracked.
// When COMMAND exited (or --timeout fired) each process is signalled as
// soon as the walk has it, so that its exit overlaps the rest of the walk.
// When a request began the stop, COMMAND gets it first, as it would
// without reaper, and everything else after: a COMMAND that waits for its
// children must learn why they die before they do (a shell would report
// the child's SIGTERM instead of running its own trap).
func (s *supervisor) signalTree() {
	reason := s.machine.Reason()
	var received syscall.Signal
	if reason == stop.Requested {
		received = s.request
	}
	td := newTeardown(reason, received, s.cfg.StopSignal, s.log)
	// Killed processes are named by their command lines; with no grace,
	// all of them are, and the SIGTERM just sent may have ended one before
	// its command line could be read.
	td.wantCommands = s.cfg.ReportPath != "" || s.cfg.Grace <= 0
	td.stopped = s.isStopped
	s.td = td
	if reason != stop.Requested {
		s.tree.Walk(func(h *handle.Handle) { td.askToStop(td.track(h), s.cfg.StopSignal) })
	} else {
		var reached, rest []*tracked
		s.tree.Walk(func(h *handle.Handle) {
			t := td.track(h)
			if s.fwd.reaches(h) {
				reached = append(reached, t)
			} else {
				rest = append(rest, t)
			}
		})
		forwarded := s.fwd.forward(received)
		for _, t := range reached {
			if forwarded != 0 {
				t.signal = forwarded
				td.continueStopped(t)
			} else {
				td.askToStop(t, s.cfg.StopSignal)
			}
		}
		for _, t := range rest {
			td.askToStop(t, s.cfg.StopSignal)
		}
	}
	s.log.Info("stopping", logs.String("reason", reason.String()), logs.Int("descendants", len(td.procs)),
		logs.Duration("grace", s.cfg.Grace))
}

// isStopped reports whether a process is stopped (SIGSTOP, Ctrl-Z): for
// reaper's children, as wait4 reported it, without reading /proc.
func (s *supervisor) isStopped(h *handle.Handle) bool {
	if h.IsChild() {
		return s.stopped[h.PID]
	}
	p, err := h.Stat()
	return err == nil && p.State == 'T'
}

// signalMissed sends the stop signal to descendants the stop has not
// tracked yet and that were already running when it began.
func (s *supervisor) signalMissed() {
	s.tree.Walk(func(h *handle.Handle) {
		if s.td.tracks(h) || !s.td.predates(h) {
			h.Close()
			return
		}
		s.td.askToStop(s.td.track(h), s.cfg.StopSignal)
	})
}

// killTree SIGKILLs every descendant not killed yet: at once where the tree
// can (cgroup.kill, forks racing it included), one by one otherwise. The
// walk comes first either way: it names each victim while its command line
// can still be read.
func (s *supervisor) killTree() {
	var victims []*tracked
	s.tree.Walk(func(h *handle.Handle) {
		if t := s.td.track(h); !t.killed && t.exitedAt.IsZero() {
			t.refreshCommand()
			victims = append(victims, t)
		}
	})
	if s.tree.KillAll() {
		s.td.killedAll(victims)
		return
	}
	for _, t := range victims {
		s.td.kill(t)
	}
}

// giveUp ends a run whose SIGKILLed processes did not go within two kill waits.
func (s *supervisor) giveUp() {
	var pids []int
	s.tree.Walk(func(h *handle.Handle) {
		pids = append(pids, h.PID)
		h.Close()
	})
	s.log.Error("processes still run after SIGKILL (uninterruptible sleep, or not reaper's to signal); giving up on them",
		logs.Ints("pids", pids), logs.Duration("waited", 2*killWait))
	if !s.cmd.reaped {
		s.cmd.lost = true
	}
	s.td.finish(time.Now(), true)
}

// tracked is one descendant seen during a stop.
type tracked struct {
	h        *handle.Handle
	token    int32          // its key in the exit watcher
	signal   syscall.Signal // the first signal the stop sent (or forwarded) to it
	cmdline  string
	exitedAt time.Time // zero while it lives
	killed   bool      // it got SIGKILL
	survived bool      // it outlived SIGKILL, and reaper gave up on it
}

// teardown is the record of one stop: who was there, what each one got
// and when it went. The stop machine decides; teardown signals and records.
type teardown struct {
	log        *logs.Logger
	reason     stop.Reason
	received   syscall.Signal // the stop request that began the stop, if any
	stopSignal syscall.Signal
	began      time.Time
	ended      time.Time
	startTick  uint64                      // the stop's start, in the clock ticks of /proc/PID/stat
	stopped    func(h *handle.Handle) bool // whether a process is stopped

	procs     []*tracked
	byPID     map[int]*tracked   // the latest tracked process with each pid
	byToken   map[int32]*tracked // processes the watcher still watches
	nextToken int32
	watcher   *handle.Watcher // nil until the first pidfd, and when none can be made
	noWatcher bool            // making or filling the watcher failed: exits of non-children are not seen
	alive     int             // tracked processes not seen to exit yet
	quiet     bool            // alive dropped to 0 since the last walk
	// wantCommands reads every tracked process's command line (for the
	// report); otherwise only killed ones are named.
	wantCommands bool
}

func newTeardown(reason stop.Reason, received, stopSignal syscall.Signal, log *logs.Logger) *teardown {
	return &teardown{
		log: log, reason: reason, received: received, stopSignal: stopSignal, began: time.Now(),
		startTick: procfs.BootTicks(), byPID: map[int]*tracked{}, byToken: map[int32]*tracked{},
	}
}

// predates reports whether h's process was already running when the stop
// began (or started in the same clock tick). One whose start /proc will not
// show (hidepid) is taken to predate it: better the stop signal than
// SIGKILL.
func (td *teardown) predates(h *handle.Handle) bool {
	p, err := h.Stat()
	return err != nil || p.Start <= td.startTick
}

// tracks reports whether the stop tracks h's process already, alive.
func (td *teardown) tracks(h *handle.Handle) bool {
	t := td.byPID[h.PID]
	if t == nil || !t.exitedAt.IsZero() {
		return false
	}
	if t.h.Exited() {
		td.markExited(t, time.Now()) // its pid names another process now
		return false
	}
	return true
}

// track starts following the process h refers to: its exit, and its
// command line for the report. track owns h: when the process is tracked
// already, h is closed and the existing record returned.
func (td *teardown) track(h *handle.Handle) *tracked {
	if td.tracks(h) {
		h.Close()
		return td.byPID[h.PID]
	}
	t := &tracked{h: h}
	if td.wantCommands {
		t.refreshCommand()
	}
	td.procs = append(td.procs, t)
	td.byPID[h.PID] = t
	td.alive++
	td.watch(t)
	return t
}

// watch registers t's pidfd with the exit watcher, making it on first use.
// Children need none: reaping them says when they exit.
func (td *teardown) watch(t *tracked) {
	if t.h.FD() < 0 || td.noWatcher {
		return
	}
	if td.watcher == nil {
		w, err := handle.NewWatcher()
		if err != nil {
			td.log.Warn("cannot watch for exits: walking again at every event", logs.Err(err))
			td.noWatcher = true
			return
		}
		td.watcher = w
	}
	td.nextToken++
	if err := td.watcher.Add(t.h, td.nextToken); err != nil {
		// An exit it cannot see would keep the stop waiting for quiet.
		td.log.Warn("cannot watch for exits: walking again at every event", logs.Int("pid", t.h.PID), logs.Err(err))
		td.noWatcher = true
		return
	}
	t.token = td.nextToken
	td.byToken[t.token] = t
}

// askToStop sends sig to t, and SIGCONT after it when t is stopped.
func (td *teardown) askToStop(t *tracked, sig syscall.Signal) {
	td.send(t, sig)
	td.continueStopped(t)
}

// continueStopped sends SIGCONT to t when it is stopped: it acts on
// nothing until continued.
func (td *teardown) continueStopped(t *tracked) {
	if t.exitedAt.IsZero() && td.stopped(t.h) {
		td.send(t, syscall.SIGCONT)
	}
}

// send signals t; the first signal the stop sends is recorded.
func (td *teardown) send(t *tracked, sig syscall.Signal) error {
	err := t.h.Signal(sig)
	switch {
	case err == handle.ErrGone:
		td.markExited(t, time.Now())
	case err != nil:
		td.log.Warn("cannot signal", logs.Int("pid", t.h.PID), logs.Signal("signal", sig), logs.Err(err))
	default:
		if t.signal == 0 {
			t.signal = sig
		}
		if td.log.DebugEnabled() {
			td.log.Debug("signalled", logs.Int("pid", t.h.PID), logs.String("comm", t.comm()), logs.Signal("signal", sig))
		}
	}
	return err
}

// kill sends SIGKILL to t, with a warning that names it.
func (td *teardown) kill(t *tracked) {
	if td.send(t, syscall.SIGKILL) == nil {
		td.markKilled(t)
	}
}

// killedAll records that victims were SIGKILLed at once (cgroup.kill),
// with a warning for each. Their command lines must have been read before.
func (td *teardown) killedAll(victims []*tracked) {
	for _, t := range victims {
		td.markKilled(t)
	}
}

// markKilled records that SIGKILL was sent to t, with a warning that names
// it.
func (td *teardown) markKilled(t *tracked) {
	t.killed = true
	td.log.Warn("killed", logs.Int("pid", t.h.PID), logs.String("command", t.describe()))
}

// wentQuiet reports, once, that every process the stop tracks has exited
// since the last call. If reaper still has children then, they are
// processes the last walk did not see. Without an exit watcher it cannot
// tell, and always says so.
func (td *teardown) wentQuiet() bool {
	q := td.quiet || td.noWatcher
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
	t.h.Close()
}

// finish closes what the stop opened and logs the summary line. Processes
// not seen to exit are gone by now, unless reaper gave up on them: those
// survived.
func (td *teardown) finish(now time.Time, gaveUp bool) {
	td.ended = now
	for _, t := range td.procs {
		if gaveUp && t.exitedAt.IsZero() && !t.h.Exited() {
			t.survived = true
			t.h.Close()
			continue
		}
		td.markExited(t, now)
	}
	if td.watcher != nil {
		td.watcher.Stop()
		td.watcher = nil
	}
	exited, killed, survived := td.outcomes()
	took := now.Sub(td.began)
	if took >= time.Millisecond {
		took = took.Round(time.Millisecond)
	} else {
		took = took.Round(time.Microsecond) // not "0s"
	}
	line := fmt.Sprintf("teardown: %s, %d exited after %s, %d killed", plural(len(td.procs), "descendant"),
		exited, td.sentNames(), killed)
	if survived > 0 {
		line += fmt.Sprintf(", %d survived SIGKILL", survived)
	}
	td.log.Info(line + ", " + took.String())
}

// outcomes counts the tracked processes that exited without SIGKILL, those
// SIGKILL ended, and those that survived it.
func (td *teardown) outcomes() (exited, killed, survived int) {
	for _, t := range td.procs {
		switch t.outcome() {
		case "survived":
			survived++
		case "killed":
			killed++
		default:
			exited++
		}
	}
	return exited, killed, survived
}

// outcome is how t ended, as the report names it: "exited" without
// SIGKILL, "killed" by it, or "survived" it.
func (t *tracked) outcome() string {
	switch {
	case t.survived:
		return "survived"
	case t.killed:
		return "killed"
	}
	return "exited"
}

// sentNames names the signals the stop sent first to the processes that
// exited without SIGKILL: the stop signal, and a signal forwarded to
// COMMAND's group when a stop request began the stop ("SIGHUP or SIGTERM").
func (td *teardown) sentNames() string {
	var sent []syscall.Signal
	for _, t := range td.procs {
		if !t.killed && t.signal != 0 && !slices.Contains(sent, t.signal) {
			sent = append(sent, t.signal)
		}
	}
	if len(sent) == 0 {
		return signals.Name(td.stopSignal)
	}
	slices.Sort(sent)
	names := make([]string, len(sent))
	for i, sig := range sent {
		names[i] = signals.Name(sig)
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

// refreshCommand reads the command line again, keeping the old one if the
// process has none to read now. A process group's has none: reaper cannot
// read /proc when it handles a group.
func (t *tracked) refreshCommand() {
	if t.h.IsGroup() {
		return
	}
	if cmdline := procfs.CommandLine(t.h.PID); cmdline != "" && !t.h.Exited() {
		t.cmdline = cmdline
	}
}

// comm returns the process's command name, "?" when it cannot be read.
func (t *tracked) comm() string {
	if t.h.IsGroup() {
		return "?"
	}
	if p, err := t.h.Stat(); err == nil {
		return p.Comm
	}
	return "?"
}

// describe returns the command line, or the command name when the process
// had none to read (a kernel thread would have none; a zombie neither).
func (t *tracked) describe() string {
	switch {
	case t.cmdline != "":
		return t.cmdline
	case t.h.IsGroup():
		return fmt.Sprintf("[process group %d]", t.h.PID)
	case !t.exitedAt.IsZero():
		return "[?]" // once it has exited, its pid may name another process
	}
	return "[" + t.comm() + "]"
}
