package itest

import (
	"os"
	"os/exec"
	"regexp"
	"syscall"
	"testing"
	"time"
)

// Daemon is a process a test bed runs as long as it lasts, with its output.
type Daemon struct {
	Name  string
	Cmd   *exec.Cmd
	Log   *Lines
	Ended chan struct{}
}

// StartDaemon starts cmd, its output collected.
func StartDaemon(t testing.TB, name string, cmd *exec.Cmd) *Daemon {
	t.Helper()
	d := &Daemon{Name: name, Cmd: cmd, Log: NewLines(), Ended: make(chan struct{})}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	pw.Close()
	go d.Log.Collect(pr)
	go func() { cmd.Wait(); close(d.Ended) }()
	return d
}

// WaitLog waits until the daemon writes a line matching re, and fails the
// test when it exits first, or after the deadline.
func (d *Daemon) WaitLog(t testing.TB, re *regexp.Regexp) {
	t.Helper()
	began := time.Now()
	d.Log.WaitFor(t, re)
	t.Logf("%s up in %v", d.Name, time.Since(began).Round(time.Millisecond))
}

// Exited tells whether the daemon has exited.
func (d *Daemon) Exited() bool {
	select {
	case <-d.Ended:
		return true
	default:
		return false
	}
}

// Stop sends the daemon SIGTERM and waits for it, SIGKILLing it after the
// deadline.
func (d *Daemon) Stop(t testing.TB) {
	if d.Exited() {
		return
	}
	d.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.Ended:
	case <-time.After(Deadline):
		t.Errorf("%s did not stop within %v of SIGTERM", d.Name, Deadline)
		d.Cmd.Process.Kill()
		<-d.Ended
	}
}
