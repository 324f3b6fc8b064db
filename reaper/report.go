package reaper

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/reaper-init/reaper/signals"
)

// Report is what --report writes: how COMMAND ended, and what the stop did
// to every descendant. Times are milliseconds.
type Report struct {
	Command  []string `json:"command"`
	ExitCode int      `json:"exit_code"` // what reaper exited with
	// CommandStatus is nil when COMMAND never started.
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
	Exited      int                `json:"exited"` // went after the stop signal
	Killed      int                `json:"killed"` // needed SIGKILL
}

// DescendantReport is one process the stop found.
type DescendantReport struct {
	PID     int     `json:"pid"`
	Command string  `json:"command"`
	Signal  string  `json:"signal,omitempty"` // first signal the stop sent it
	Outcome string  `json:"outcome"`          // "exited" or "killed"
	GoneMS  float64 `json:"gone_ms"`          // from the start of the stop
}

func millis(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// report assembles the Report for a run that ends with code.
func (s *supervisor) report(code int) Report {
	r := Report{Command: s.cfg.Command, ExitCode: code, TimedOut: s.timedOut}
	if s.startErr != nil {
		r.StartError = s.startErr.Error()
	}
	if s.childGone {
		st := &CommandStatus{PID: s.child, Exited: s.childStatus.Exited(), CoreDumped: s.childStatus.CoreDump()}
		if st.Exited {
			st.Code = s.childStatus.ExitStatus()
		} else {
			st.Signal = signals.Name(s.childStatus.Signal())
		}
		r.CommandStatus = st
	}
	if td := s.stop; td != nil {
		tr := &TeardownReport{
			Reason: td.reason.String(), StopSignal: signals.Name(td.stopSignal),
			GraceMS: millis(s.cfg.Grace), TotalMS: millis(td.ended.Sub(td.began)),
			Descendants: []DescendantReport{},
		}
		if td.received != 0 {
			tr.Received = signals.Name(td.received)
		}
		for _, t := range td.procs {
			d := DescendantReport{PID: t.h.PID, Command: t.describe(), Outcome: "exited", GoneMS: millis(t.exitedAt.Sub(td.began))}
			if t.signal != 0 {
				d.Signal = signals.Name(t.signal)
			}
			if t.killed {
				d.Outcome = "killed"
				tr.Killed++
			} else {
				tr.Exited++
			}
			tr.Descendants = append(tr.Descendants, d)
		}
		r.Teardown = tr
	}
	return r
}

// writeReport writes the --report file, if one was asked for.
func (s *supervisor) writeReport(code int) {
	if s.cfg.ReportPath == "" {
		return
	}
	data, err := json.MarshalIndent(s.report(code), "", "  ")
	if err == nil {
		err = os.WriteFile(s.cfg.ReportPath, append(data, '\n'), 0o644)
	}
	if err != nil {
		s.log.Error(fmt.Sprintf("cannot write report %s", s.cfg.ReportPath), errorField(err))
	}
}
