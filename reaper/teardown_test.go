package reaper

import (
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/reaper-init/reaper/reaper/handle"
	"github.com/reaper-init/reaper/reaper/logs"
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
	td := newTeardown(stop.CommandExited, 0, syscall.SIGTERM, logs.Discard())
	td.stopped = func(*handle.Handle) bool { return false }
	track := func(pid int) *tracked {
		h, ok := handle.Child(pid)
		if !ok {
			t.Fatalf("pid %d is no child", pid)
		}
		return td.track(h)
	}
	// alive stands for a process SIGKILL could not end (one reaper may not
	// signal, or in uninterruptible sleep): it gets none here.
	track(alive)
	td.kill(track(gone))
	var ws syscall.WaitStatus
	syscall.Wait4(gone, &ws, 0, nil)
	td.noteReaped(gone, time.Now())
	td.finish(time.Now(), true)
	r := td.report(time.Second)
	if r.Survived != 1 || r.Killed != 1 || r.Exited != 0 {
		t.Fatalf("report: %d survived, %d killed, %d exited; want 1, 1, 0", r.Survived, r.Killed, r.Exited)
	}
	for _, d := range r.Descendants {
		switch d.Outcome {
		case "survived":
			if d.GoneMS != nil {
				t.Errorf("a survivor went at %v ms", *d.GoneMS)
			}
		case "killed":
			if d.GoneMS == nil || d.PID != gone {
				t.Errorf("the killed process: %+v", d)
			}
		}
	}
}

// TestOutputHasADeadline runs a program that closes its stdout and goes on:
// output must return within its bound, and leave no child behind.
func TestOutputHasADeadline(t *testing.T) {
	began := time.Now()
	_, err := output("/bin/sh", []string{"sh", "-c", "exec >&-; exec sleep 100"}, 200*time.Millisecond)
	if err == nil {
		t.Fatal("output of a program that never exits: no error")
	}
	if took := time.Since(began); took > time.Minute {
		t.Errorf("output took %v", took)
	}
	var ws syscall.WaitStatus
	if _, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil); !errors.Is(err, syscall.ECHILD) {
		t.Errorf("a child is left: %v", err)
	}
	out, err := output("/bin/sh", []string{"sh", "-c", "echo 90s"}, time.Minute)
	if err != nil || out != "90s\n" {
		t.Errorf("output = %q, %v", out, err)
	}
}
