package record

import (
	"syscall"
	"testing"
	"time"

	"github.com/reaper-init/reaper/reaper/handle"
	"github.com/reaper-init/reaper/reaper/stop"
)

// startChild starts sleep 100 as a child of the test's, killed and reaped
// when the test ends.
func startChild(t *testing.T) int {
	t.Helper()
	pid, err := syscall.ForkExec("/bin/sleep", []string{"sleep", "100"}, &syscall.ProcAttr{Files: []uintptr{0, 1, 2}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(pid, syscall.SIGKILL)
		var ws syscall.WaitStatus
		syscall.Wait4(pid, &ws, 0, nil)
	})
	return pid
}

// TestReportAfterGivingUp: a process reaper gave up on is reported as
// having survived, with no time of going; one that exited, with its time.
func TestReportAfterGivingUp(t *testing.T) {
	alive, gone := startChild(t), startChild(t)
	rec := New(stop.CommandExited, 0, syscall.SIGTERM, time.Now())
	track := func(pid int) *Process {
		h, ok := handle.Child(pid)
		if !ok {
			t.Fatalf("pid %d is no child", pid)
		}
		p, _ := rec.Track(h)
		return p
	}
	// alive stands for a process SIGKILL could not end (one reaper may not
	// signal, or in uninterruptible sleep): it gets none here.
	track(alive)
	killed := track(gone)
	if err := killed.Handle.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	rec.MarkKilled(killed)
	var ws syscall.WaitStatus
	syscall.Wait4(gone, &ws, 0, nil)
	rec.NoteReaped(gone, time.Now())
	rec.Finish(time.Now(), true)
	r := rec.Report(time.Second)
	if r.Survived != 1 || r.Killed != 1 || r.Exited != 0 {
		t.Fatalf("report: %d survived, %d killed, %d exited; want 1, 1, 0", r.Survived, r.Killed, r.Exited)
	}
	for _, d := range r.Descendants {
		switch d.Outcome {
		case Survived:
			if d.GoneMS != nil {
				t.Errorf("a survivor went at %v ms", *d.GoneMS)
			}
		case Killed:
			if d.GoneMS == nil || d.PID != gone {
				t.Errorf("the killed process: %+v", d)
			}
		}
	}
}
