package supervisor

import (
	"syscall"
	"time"

	"github.com/reaper-init/reaper/reaper/handle"
	"github.com/reaper-init/reaper/reaper/logs"
	"github.com/reaper-init/reaper/reaper/record"
	"github.com/reaper-init/reaper/reaper/stop"
	"go.uber.org/zap/zapcore"
)

// The actions of the stop machine, carried out on the tree and noted in
// the record of the stop.

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
	rec := s.openRecord()
	if rec.Reason != stop.Requested {
		s.tree.Walk(func(h *handle.Handle) { s.askToStop(s.track(h), s.cfg.StopSignal) })
	} else {
		reached, rest := s.walkReach(true)
		s.forwardRequest(reached)
		for _, p := range rest {
			s.askToStop(p, s.cfg.StopSignal)
		}
	}
	s.log.Info("stopping", logs.String("reason", rec.Reason.String()), logs.Int("descendants", len(rec.Processes)),
		logs.Duration("grace", s.stopDeadline()))
}

// signalCommand forwards the stop request that began the stop to COMMAND
// alone (or its process group, as the policy says), and opens the record
// of the stop: COMMAND stops its own workers, in its own order, and the
// others wait for SignalOthers.
func (s *supervisor) signalCommand() {
	rec := s.openRecord()
	reached, _ := s.walkReach(false)
	s.forwardRequest(reached)
	fields := []zapcore.Field{logs.String("reason", rec.Reason.String()), logs.String("first", "COMMAND"),
		logs.Int("reached", len(reached))}
	if s.stop.budget.NoDeadline {
		fields = append(fields, logs.String("grace", "none: the manager's"))
	} else {
		fields = append(fields, logs.Duration("grace", s.stopDeadline()),
			logs.Duration("others_after", s.stop.machine.OthersAfter()))
	}
	s.log.Info("stopping", fields...)
}

// signalOthers sends the stop signal to every descendant that has not had
// it yet: what COMMAND left, or what it has not stopped three quarters
// into the deadline, and what the request reached when it was another
// signal (a background job of a shell ignores the SIGINT a CI runner's
// cancel sends, not SIGTERM).
func (s *supervisor) signalOthers() {
	n := 0
	s.tree.Walk(func(h *handle.Handle) {
		p := s.track(h)
		if p.Signal == s.cfg.StopSignal || !p.ExitedAt.IsZero() {
			return
		}
		s.askToStop(p, s.cfg.StopSignal)
		n++
	})
	if n > 0 {
		s.log.Info("stopping the other descendants", logs.Int("descendants", n), logs.Signal("signal", s.cfg.StopSignal))
	}
}

// openRecord opens the record of the stop the machine began.
func (s *supervisor) openRecord() *record.Stop {
	reason := s.stop.machine.Reason()
	var received syscall.Signal
	if reason == stop.Requested {
		received = s.stop.request
	}
	rec := record.New(reason, received, s.cfg.StopSignal, time.Now())
	// Killed processes are named by their command lines; with no grace,
	// all of them are, and the SIGTERM just sent may have ended one before
	// its command line could be read. The report and the step summary name
	// every process.
	rec.WantCommands = s.cfg.ReportPath != "" || s.cfg.StepSummary != "" || s.stop.machine.Phase() == stop.Killing
	s.stop.record = rec
	return rec
}

// walkReach walks the tree and tracks the processes the stop request
// reaches when forwarded; with all, the others too, returned apart.
func (s *supervisor) walkReach(all bool) (reached, rest []*record.Process) {
	target := s.forwarder.policy.Target
	s.tree.Walk(func(h *handle.Handle) {
		switch {
		case s.forwarder.reaches(h, target):
			reached = append(reached, s.track(h))
		case all:
			rest = append(rest, s.track(h))
		default:
			h.Close()
		}
	})
	return reached, rest
}

// forwardRequest forwards the stop request as any signal is, and notes it
// for the processes it reached. A request that forwards nothing (a
// rewrite to 0) sends them the stop signal instead.
func (s *supervisor) forwardRequest(reached []*record.Process) {
	forwarded := s.forwarder.forward(s.stop.request)
	for _, p := range reached {
		if forwarded != 0 {
			s.stop.record.NoteSignal(p, forwarded)
			s.continueStopped(p)
		} else {
			s.askToStop(p, s.cfg.StopSignal)
		}
	}
}

// signalMissed sends the stop signal to descendants the stop has not
// tracked yet and that were already running when it began.
func (s *supervisor) signalMissed() {
	s.tree.Walk(func(h *handle.Handle) {
		if s.stop.record.Tracks(h) || !s.stop.record.Predates(h) {
			h.Close()
			return
		}
		s.askToStop(s.track(h), s.cfg.StopSignal)
	})
}

// killTree SIGKILLs every descendant not killed yet: at once where the tree
// can (cgroup.kill, forks racing it included), one by one otherwise. The
// walk comes first either way: it names each victim while its command line
// can still be read.
func (s *supervisor) killTree() {
	var victims []*record.Process
	s.tree.Walk(func(h *handle.Handle) {
		if p := s.track(h); !p.Killed && p.ExitedAt.IsZero() {
			p.RefreshCommand()
			victims = append(victims, p)
		}
	})
	if s.tree.KillAll() {
		for _, p := range victims {
			s.markKilled(p)
		}
		return
	}
	for _, p := range victims {
		if s.send(p, syscall.SIGKILL) == nil {
			s.markKilled(p)
		}
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
	s.finishRecord(true)
}

// finishRecord closes the record of the stop, if one began, and logs its
// summary line.
func (s *supervisor) finishRecord(gaveUp bool) {
	if s.stop.record == nil {
		return
	}
	s.stop.record.Finish(time.Now(), gaveUp)
	s.stop.exits.stop()
	s.log.Info(s.stop.record.Summary())
}

// track starts following the process h refers to (see record.Track), and
// watches a new one's exit.
func (s *supervisor) track(h *handle.Handle) *record.Process {
	p, added := s.stop.record.Track(h)
	if added {
		s.stop.exits.watch(p, s.log)
	}
	return p
}

// askToStop sends sig to p, and SIGCONT after it when p is stopped.
func (s *supervisor) askToStop(p *record.Process, sig syscall.Signal) {
	s.send(p, sig)
	s.continueStopped(p)
}

// continueStopped sends SIGCONT to p when it is stopped: it acts on
// nothing until continued.
func (s *supervisor) continueStopped(p *record.Process) {
	if p.ExitedAt.IsZero() && s.isStopped(p.Handle) {
		s.send(p, syscall.SIGCONT)
	}
}

// isStopped reports whether a process is stopped (SIGSTOP, Ctrl-Z): for
// reaper's children, as wait4 reported it, without reading /proc.
func (s *supervisor) isStopped(h *handle.Handle) bool {
	if h.IsChild() {
		return s.children.stopped[h.PID]
	}
	return h.Stopped()
}

// send signals p, and notes it in the record.
func (s *supervisor) send(p *record.Process, sig syscall.Signal) error {
	err := p.Handle.Signal(sig)
	switch {
	case err == handle.ErrGone:
		s.stop.record.MarkExited(p, time.Now())
	case err != nil:
		s.log.Warn("cannot signal", logs.Int("pid", p.Handle.PID), logs.Signal("signal", sig), logs.Err(err))
	default:
		s.stop.record.NoteSignal(p, sig)
		if s.log.DebugEnabled() {
			s.log.Debug("signalled", logs.Int("pid", p.Handle.PID), logs.String("comm", p.Comm()), logs.Signal("signal", sig))
		}
	}
	return err
}

// markKilled records that SIGKILL was sent to p, with a warning that names
// it. Its command line must have been read before.
func (s *supervisor) markKilled(p *record.Process) {
	s.stop.record.MarkKilled(p)
	s.log.Warn("killed", logs.Int("pid", p.Handle.PID), logs.String("command", p.Describe()))
}

// exitWatch watches the pidfds of the processes a stop tracks, so that the
// exit of one that is not reaper's child is seen without a walk. Children
// need none: reaping them says when they exit.
type exitWatch struct {
	watcher *handle.Watcher // nil until the first pidfd, and when none can be made
	byToken map[int32]*record.Process
	next    int32
	broken  bool // making or filling the watcher failed: exits of non-children are not seen
}

// c returns the channel the watcher reports exits on; nil (never ready)
// without one.
func (w *exitWatch) c() <-chan []int32 {
	if w.watcher == nil {
		return nil
	}
	return w.watcher.C
}

// watch registers p's pidfd with the watcher, making it on first use.
func (w *exitWatch) watch(p *record.Process, log *logs.Logger) {
	if p.Handle.FD() < 0 || w.broken {
		return
	}
	if w.watcher == nil {
		watcher, err := handle.NewWatcher()
		if err != nil {
			log.Warn("cannot watch for exits: walking again at every event", logs.Err(err))
			w.broken = true
			return
		}
		w.watcher, w.byToken = watcher, map[int32]*record.Process{}
	}
	w.next++
	if err := w.watcher.Add(p.Handle, w.next); err != nil {
		// An exit it cannot see would keep the stop waiting for quiet.
		log.Warn("cannot watch for exits: walking again at every event", logs.Int("pid", p.Handle.PID), logs.Err(err))
		w.broken = true
		return
	}
	w.byToken[w.next] = p
}

// noteExits records in rec the processes the watcher saw exit.
func (w *exitWatch) noteExits(rec *record.Stop, tokens []int32, now time.Time) {
	for _, token := range tokens {
		if p := w.byToken[token]; p != nil {
			delete(w.byToken, token)
			rec.MarkExited(p, now)
		}
	}
}

// stop ends the watch.
func (w *exitWatch) stop() {
	if w.watcher != nil {
		w.watcher.Stop()
		w.watcher = nil
	}
}
