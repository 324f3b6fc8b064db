package reaper

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/go-multierror"

	"github.com/reaper-init/reaper/reaper/logs"
	"github.com/reaper-init/reaper/signals"
)

// Report is what --report writes: how COMMAND ended, and what the stop did
// to every descendant. Times are milliseconds.
type Report struct {
	Command  []string `json:"command"`
	ExitCode int      `json:"exit_code"` // what reaper exited with
	// CommandStatus is nil when COMMAND never started, or outlived SIGKILL.
	CommandStatus *CommandStatus `json:"command_status"`
	StartError    string         `json:"start_error,omitempty"`
	TimedOut      bool           `json:"timed_out"`
	// Teardown is nil when COMMAND exited with nothing left below it, or
	// when --wait let the rest finish on their own.
	Teardown *TeardownReport `json:"teardown"`
}

// CommandStatus is COMMAND's wait status.
type CommandStatus struct {
	PID        int    `json:"pid"`
	Exited     bool   `json:"exited"`
	Code       int    `json:"code"`             // exit code when Exited
	Signal     string `json:"signal,omitempty"` // the killing signal otherwise
	CoreDumped bool   `json:"core_dumped,omitempty"`
}

// TeardownReport describes one stop.
type TeardownReport struct {
	Reason      string             `json:"reason"`                    // "command exited", "signal" or "timeout"
	Received    string             `json:"received_signal,omitempty"` // the signal that started it
	StopSignal  string             `json:"stop_signal"`
	GraceMS     float64            `json:"grace_ms"`
	TotalMS     float64            `json:"total_ms"`
	Descendants []DescendantReport `json:"descendants"`
	Exited      int                `json:"exited"`             // went after the stop signal
	Killed      int                `json:"killed"`             // needed SIGKILL
	Survived    int                `json:"survived,omitempty"` // outlived SIGKILL: reaper gave up on them
}

// DescendantReport is one process the stop found.
type DescendantReport struct {
	PID     int    `json:"pid"`
	Command string `json:"command"`
	Signal  string `json:"signal,omitempty"` // first signal the stop sent it
	Outcome string `json:"outcome"`          // "exited", "killed" or "survived"
	// GoneMS is when it was gone, from the start of the stop; nil for a
	// process that survived.
	GoneMS *float64 `json:"gone_ms,omitempty"`
}

func millis(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// report assembles the Report for a run that ends with code.
func (s *supervisor) report(code int) Report {
	r := Report{Command: s.cfg.Command, ExitCode: code, TimedOut: s.machine != nil && s.machine.TimedOut()}
	if s.startErr != nil {
		r.StartError = s.startErr.Error()
	}
	if s.cmd.reaped {
		st := &CommandStatus{PID: s.cmd.pid, Exited: s.cmd.status.Exited(), CoreDumped: s.cmd.status.CoreDump()}
		if st.Exited {
			st.Code = s.cmd.status.ExitStatus()
		} else {
			st.Signal = signals.Name(s.cmd.status.Signal())
		}
		r.CommandStatus = st
	}
	if s.td != nil {
		r.Teardown = s.td.report(s.cfg.Grace)
	}
	return r
}

// report describes the stop.
func (td *teardown) report(grace time.Duration) *TeardownReport {
	tr := &TeardownReport{
		Reason: td.reason.String(), StopSignal: signals.Name(td.stopSignal),
		GraceMS: millis(grace), TotalMS: millis(td.ended.Sub(td.began)),
		Descendants: []DescendantReport{},
	}
	tr.Exited, tr.Killed, tr.Survived = td.outcomes()
	if td.received != 0 {
		tr.Received = signals.Name(td.received)
	}
	for _, t := range td.procs {
		d := DescendantReport{PID: t.h.PID, Command: t.describe(), Outcome: "exited"}
		if t.signal != 0 {
			d.Signal = signals.Name(t.signal)
		}
		d.Outcome = t.outcome()
		if !t.survived {
			gone := millis(t.exitedAt.Sub(td.began))
			d.GoneMS = &gone
		}
		tr.Descendants = append(tr.Descendants, d)
	}
	return tr
}

// writeReport writes the --report file, if one was asked for.
func (s *supervisor) writeReport(code int) error {
	if s.cfg.ReportPath == "" {
		return nil
	}
	data, err := json.MarshalIndent(s.report(code), "", "  ")
	if err == nil {
		err = os.WriteFile(s.cfg.ReportPath, append(data, '\n'), 0o644)
	}
	if err != nil {
		return fmt.Errorf("cannot write report %s: %w", s.cfg.ReportPath, err)
	}
	return nil
}

// end writes the report and releases what the run took. The failures met
// at the end of a run (processes that outlived SIGKILL, the report, the
// cgroup, the lock) are collected and logged together.
func (s *supervisor) end(code int) {
	var errs *multierror.Error
	if s.td != nil {
		for _, t := range s.td.procs {
			if t.survived {
				errs = multierror.Append(errs, fmt.Errorf("pid %d (%s) still runs after SIGKILL", t.h.PID, t.describe()))
			}
		}
	}
	errs = multierror.Append(errs, s.writeReport(code))
	errs = multierror.Append(errs, s.release())
	logErrors(s.log, errs)
}

// cleanUp releases what prepare took, when COMMAND does not start.
func (s *supervisor) cleanUp() {
	logErrors(s.log, s.release())
}

// release stops relaying notifications, removes the cgroup (once empty) and
// drops the instance's lock.
func (s *supervisor) release() error {
	var errs *multierror.Error
	if s.relay != nil {
		s.relay.Close()
		s.relay = nil
	}
	if s.leaf != nil {
		if err := s.leaf.Remove(); err != nil {
			errs = multierror.Append(errs, fmt.Errorf("cannot remove the cgroup %s: %w", s.leaf.Dir, err))
		}
		s.leaf = nil
	}
	if s.lock != nil {
		if err := s.lock.Release(); err != nil {
			errs = multierror.Append(errs, fmt.Errorf("cannot release the instance lock: %w", err))
		}
		s.lock = nil
	}
	return errs.ErrorOrNil()
}

// logErrors logs err, one error or several, as one error line.
func logErrors(log *logs.Logger, err error) {
	var errs *multierror.Error
	if errors.As(err, &errs) {
		errs.ErrorFormat = oneLine
		err = errs.ErrorOrNil()
	}
	if err != nil {
		log.Error("the run ended with errors", logs.Err(err))
	}
}

// oneLine formats several errors on one line: a log line is one line.
func oneLine(errs []error) string {
	parts := make([]string, len(errs))
	for i, err := range errs {
		parts[i] = err.Error()
	}
	if len(parts) == 1 {
		return parts[0]
	}
	return fmt.Sprintf("%d errors: %s", len(parts), strings.Join(parts, "; "))
}
