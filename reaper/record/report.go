package record

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/reaper-init/reaper/reaper/exitcode"
	"github.com/reaper-init/reaper/reaper/logs"
	"github.com/reaper-init/reaper/reaper/token"
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

// Write writes r as JSON to the file at path. The file is made new, in
// path's directory, under a random name (O_CREAT|O_EXCL|O_NOFOLLOW, mode
// 0600: command lines may carry secrets), then renamed to path: a reader
// never sees half a report, and whatever another user planted at path (a
// symbolic link, a FIFO, a socket, a device, a file of theirs) is replaced,
// never opened, followed or written into. A directory at path is an error.
// Nothing here can block on another process.
func Write(path string, r Report) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err == nil {
		// encoding/json writes DEL and the C1 controls raw: no terminal
		// showing the report must act on them.
		err = writeNew(path, append(logs.EscapeJSONControls(data), '\n'))
	}
	if err != nil {
		return fmt.Errorf("cannot write report %s: %w", path, err)
	}
	return nil
}

// writeNew writes data to a new file of its own in path's directory and
// renames it to path.
func writeNew(path string, data []byte) error {
	dirPath, name := filepath.Split(path)
	if name == "" || name == "." || name == ".." {
		return errors.New("not a file name")
	}
	if dirPath == "" {
		dirPath = "."
	}
	// O_PATH: a FIFO or a device named as the directory is not opened.
	dir, err := unix.Open(dirPath, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &fs.PathError{Op: "open", Path: dirPath, Err: err}
	}
	defer unix.Close(dir)
	tmp, fd, err := createNew(dir, name)
	if err != nil {
		return err
	}
	err = writeAll(fd, data)
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	if err == nil {
		if err = unix.Renameat(dir, tmp, dir, name); err != nil {
			err = &fs.PathError{Op: "rename", Path: path, Err: err}
		}
	}
	if err != nil {
		unix.Unlinkat(dir, tmp, 0)
	}
	return err
}

// createNew creates a file that did not exist, ".NAME.reaper-RANDOM", in
// dir, mode 0600, and returns its name and descriptor.
func createNew(dir int, name string) (string, int, error) {
	var err error
	for range 5 { // a random name taken already: someone guessed it, try another
		tmp := "." + name + ".reaper-" + token.New(8)
		var fd int
		fd, err = unix.Openat(dir, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err == nil {
			return tmp, fd, nil
		}
		if err != unix.EEXIST {
			break
		}
	}
	return "", -1, &fs.PathError{Op: "create", Path: name, Err: err}
}

// writeAll writes data to fd.
func writeAll(fd int, data []byte) error {
	for len(data) > 0 {
		n, err := unix.Write(fd, data)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}
