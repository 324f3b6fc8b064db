// Package record is the record of a stop: which descendants it found, the
// first signal each one got, whether it needed SIGKILL, when it was gone,
// and, once the stop is over, the outcomes, the summary line and the
// report. It decides nothing and signals nobody: the supervisor does, and
// notes here what it did and what it saw.
package record

import (
	"fmt"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/reaper-init/reaper/reaper/handle"
	"github.com/reaper-init/reaper/reaper/procfs"
	"github.com/reaper-init/reaper/reaper/stop"
	"github.com/reaper-init/reaper/signals"
)

// Outcomes of a process, as the report names them.
const (
	Exited   = "exited"   // it went without SIGKILL
	Killed   = "killed"   // SIGKILL ended it
	Survived = "survived" // it outlived SIGKILL, and reaper gave up on it
)

// Process is one descendant a stop found.
type Process struct {
	Handle   *handle.Handle // closed once the process is gone
	Signal   syscall.Signal // the first signal the stop sent (or forwarded) to it
	Command  string         // its command line, when read
	ExitedAt time.Time      // zero while it lives
	Killed   bool           // it got SIGKILL
	Survived bool           // it outlived SIGKILL, and reaper gave up on it
}

// Stop is the record of one stop.
type Stop struct {
	Reason     stop.Reason
	Received   syscall.Signal // the stop request that began the stop, if any
	StopSignal syscall.Signal
	Began      time.Time
	Ended      time.Time
	// WantCommands reads every tracked process's command line (for the
	// report); otherwise only killed ones are named.
	WantCommands bool

	Processes []*Process
	byPID     map[int]*Process // the latest tracked process with each pid
	startTick uint64           // the stop's start, in the clock ticks of /proc/PID/stat
	alive     int              // tracked processes not seen to exit yet
	quiet     bool             // alive dropped to 0 since the last TakeQuiet
}

// New opens the record of a stop that begins now, for reason; received is
// the stop request that began it, if any.
func New(reason stop.Reason, received, stopSignal syscall.Signal, now time.Time) *Stop {
	return &Stop{
		Reason: reason, Received: received, StopSignal: stopSignal, Began: now,
		startTick: procfs.BootTicks(), byPID: map[int]*Process{},
	}
}

// Predates reports whether h's process was already running when the stop
// began (or started in the same clock tick). One whose start /proc will not
// show (hidepid) is taken to predate it: better the stop signal than
// SIGKILL.
func (s *Stop) Predates(h *handle.Handle) bool {
	p, err := h.Stat()
	return err != nil || p.Start <= s.startTick
}

// Tracks reports whether the stop tracks h's process already, alive.
func (s *Stop) Tracks(h *handle.Handle) bool {
	p := s.byPID[h.PID]
	if p == nil || !p.ExitedAt.IsZero() {
		return false
	}
	if p.Handle.Exited() {
		s.MarkExited(p, time.Now()) // its pid names another process now
		return false
	}
	return true
}

// Track starts following the process h refers to and returns its record,
// and whether it is new. Track owns h: when the process is tracked
// already, h is closed and the existing record returned.
func (s *Stop) Track(h *handle.Handle) (p *Process, added bool) {
	if s.Tracks(h) {
		h.Close()
		return s.byPID[h.PID], false
	}
	p = &Process{Handle: h}
	if s.WantCommands {
		p.RefreshCommand()
	}
	s.Processes = append(s.Processes, p)
	s.byPID[h.PID] = p
	s.alive++
	return p, true
}

// NoteSignal records that sig was sent to p; the first one counts.
func (s *Stop) NoteSignal(p *Process, sig syscall.Signal) {
	if p.Signal == 0 {
		p.Signal = sig
	}
}

// MarkKilled records that SIGKILL was sent to p.
func (s *Stop) MarkKilled(p *Process) { p.Killed = true }

// MarkExited records that p was gone at now, and closes its handle.
func (s *Stop) MarkExited(p *Process, now time.Time) {
	if !p.ExitedAt.IsZero() {
		return
	}
	p.ExitedAt = now
	s.alive--
	s.quiet = s.alive == 0
	p.Handle.Close()
}

// NoteReaped records that reaper reaped pid.
func (s *Stop) NoteReaped(pid int, now time.Time) {
	if p := s.byPID[pid]; p != nil {
		s.MarkExited(p, now)
	}
}

// TakeQuiet reports, once, that every process the stop tracks has exited
// since the last call.
func (s *Stop) TakeQuiet() bool {
	q := s.quiet
	s.quiet = false
	return q
}

// Finish closes the record at now. Processes not seen to exit are gone by
// now, unless reaper gave up on them: those survived.
func (s *Stop) Finish(now time.Time, gaveUp bool) {
	s.Ended = now
	for _, p := range s.Processes {
		if gaveUp && p.ExitedAt.IsZero() && !p.Handle.Exited() {
			p.Survived = true
			p.Handle.Close()
			continue
		}
		s.MarkExited(p, now)
	}
}

// Outcomes counts the tracked processes that exited without SIGKILL, those
// SIGKILL ended, and those that survived it.
func (s *Stop) Outcomes() (exited, killed, survived int) {
	for _, p := range s.Processes {
		switch p.Outcome() {
		case Survived:
			survived++
		case Killed:
			killed++
		default:
			exited++
		}
	}
	return exited, killed, survived
}

// Summary is the one-line account of a finished stop: "teardown: 12
// descendants, 11 exited after SIGTERM, 1 killed, 31ms".
func (s *Stop) Summary() string {
	exited, killed, survived := s.Outcomes()
	took := s.Ended.Sub(s.Began)
	if took >= time.Millisecond {
		took = took.Round(time.Millisecond)
	} else {
		took = took.Round(time.Microsecond) // not "0s"
	}
	line := fmt.Sprintf("teardown: %s, %d exited after %s, %d killed", plural(len(s.Processes), "descendant"),
		exited, s.sentNames(), killed)
	if survived > 0 {
		line += fmt.Sprintf(", %d survived SIGKILL", survived)
	}
	return line + ", " + took.String()
}

// sentNames names the signals the stop sent first to the processes that
// exited without SIGKILL: the stop signal, and a signal forwarded to
// COMMAND's group when a stop request began the stop ("SIGHUP or SIGTERM").
func (s *Stop) sentNames() string {
	var sent []syscall.Signal
	for _, p := range s.Processes {
		if !p.Killed && p.Signal != 0 && !slices.Contains(sent, p.Signal) {
			sent = append(sent, p.Signal)
		}
	}
	if len(sent) == 0 {
		return signals.Name(s.StopSignal)
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

// Outcome is how p ended: Exited without SIGKILL, Killed by it, or
// Survived it.
func (p *Process) Outcome() string {
	switch {
	case p.Survived:
		return Survived
	case p.Killed:
		return Killed
	}
	return Exited
}

// RefreshCommand reads the command line again, keeping the old one if the
// process has none to read now. A process group's has none: reaper cannot
// read /proc when it handles a group.
func (p *Process) RefreshCommand() {
	if p.Handle.IsGroup() {
		return
	}
	if cmdline := procfs.CommandLine(p.Handle.PID); cmdline != "" && !p.Handle.Exited() {
		p.Command = cmdline
	}
}

// Comm returns the process's command name, "?" when it cannot be read.
func (p *Process) Comm() string {
	if p.Handle.IsGroup() {
		return "?"
	}
	if st, err := p.Handle.Stat(); err == nil {
		return st.Comm
	}
	return "?"
}

// Describe returns the command line, or the command name when the process
// had none to read (a kernel thread would have none; a zombie neither).
func (p *Process) Describe() string {
	switch {
	case p.Command != "":
		return p.Command
	case p.Handle.IsGroup():
		return fmt.Sprintf("[process group %d]", p.Handle.PID)
	case !p.ExitedAt.IsZero():
		return "[?]" // once it has exited, its pid may name another process
	}
	return "[" + p.Comm() + "]"
}
