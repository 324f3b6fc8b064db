package record

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/reaper-init/reaper/reaper/exitcode"
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

// StatusOf is the CommandStatus of COMMAND, pid, reaped with ws.
func StatusOf(pid int, ws unix.WaitStatus) *CommandStatus {
	st := &CommandStatus{PID: pid, Exited: ws.Exited(), CoreDumped: ws.CoreDump()}
	if st.Exited {
		st.Code = ws.ExitStatus()
	} else {
		st.Signal = signals.Name(exitcode.Signal(ws))
	}
	return st
}

// Report describes the stop, whose grace period was grace.
func (s *Stop) Report(grace time.Duration) *TeardownReport {
	tr := &TeardownReport{
		Reason: s.Reason.String(), StopSignal: signals.Name(s.StopSignal),
		GraceMS: millis(grace), TotalMS: millis(s.Ended.Sub(s.Began)),
		Descendants: []DescendantReport{},
	}
	tr.Exited, tr.Killed, tr.Survived = s.Outcomes()
	if s.Received != 0 {
		tr.Received = signals.Name(s.Received)
	}
	for _, p := range s.Processes {
		d := DescendantReport{PID: p.Handle.PID, Command: p.Describe(), Outcome: p.Outcome()}
		if p.Signal != 0 {
			d.Signal = signals.Name(p.Signal)
		}
		if !p.Survived {
			gone := millis(p.ExitedAt.Sub(s.Began))
			d.GoneMS = &gone
		}
		tr.Descendants = append(tr.Descendants, d)
	}
	return tr
}

// Write writes r as JSON to the file at path.
func Write(path string, r Report) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err == nil {
		err = os.WriteFile(path, append(data, '\n'), 0o644)
	}
	if err != nil {
		return fmt.Errorf("cannot write report %s: %w", path, err)
	}
	return nil
}
