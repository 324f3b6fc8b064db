package handle

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/reaper-init/reaper/reaper/procfs"
)

// start starts argv as a child of the test's, killed and reaped when the
// test ends unless reaped before.
func start(t *testing.T, argv ...string) int {
	t.Helper()
	path, err := exec.LookPath(argv[0])
	if err != nil {
		if os.Getenv("REAPER_REQUIRE_ALL") == "1" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	pid, err := syscall.ForkExec(path, argv, &syscall.ProcAttr{Files: []uintptr{0, w.Fd(), 2}})
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(pid, syscall.SIGKILL)
		var ws syscall.WaitStatus
		syscall.Wait4(pid, &ws, 0, nil)
	})
	// Each payload says "ready" once it is what the test wants.
	r.SetReadDeadline(time.Now().Add(time.Minute))
	if line, err := bufio.NewReader(r).ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("%v: %q %v", argv, line, err)
	}
	return pid
}

func reap(t *testing.T, pid int) syscall.WaitStatus {
	t.Helper()
	var ws syscall.WaitStatus
	if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil {
		t.Fatal(err)
	}
	return ws
}

func TestChild(t *testing.T) {
	pid := start(t, "sh", "-c", "echo ready; exec sleep 100")
	h, ok := Child(pid)
	if !ok || h.FD() >= 0 || !h.IsChild() || h.Exited() {
		t.Fatalf("Child(%d) = %+v, %v", pid, h, ok)
	}
	if pgid, err := h.PGID(); err != nil || pgid != syscall.Getpgrp() {
		t.Errorf("PGID = %d, %v; want the test's group %d", pgid, err, syscall.Getpgrp())
	}
	if err := h.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if ws := reap(t, pid); ws.Signal() != syscall.SIGTERM {
		t.Errorf("status %v, want SIGTERM", ws)
	}
	if !h.Exited() {
		t.Error("a reaped child has not exited")
	}
	if _, ok := Child(1); ok {
		t.Error("pid 1 is a child of the test's")
	}
}

func TestOpen(t *testing.T) {
	pid := start(t, "sh", "-c", "echo ready; exec sleep 100")
	h, err := Open(pid, func() error { return nil })
	if err != nil || h.FD() < 0 || h.IsChild() {
		t.Fatalf("Open(%d) = %+v, %v", pid, h, err)
	}
	defer h.Close()
	if _, err := Open(pid, func() error { return ErrGone }); !errors.Is(err, ErrGone) {
		t.Errorf("Open with a check that says no: %v, want ErrGone", err)
	}
	hidden := errors.New("cannot tell")
	if _, err := Open(pid, func() error { return hidden }); err != hidden {
		t.Errorf("Open of a live process whose check cannot tell: %v, want the check's error", err)
	}
	h.Signal(syscall.SIGKILL)
	reap(t, pid)
	if !h.Exited() || !errors.Is(h.Signal(syscall.SIGTERM), ErrGone) {
		t.Error("a reaped process: not exited, or still signalled")
	}
	if _, err := Open(pid, func() error { return nil }); !errors.Is(err, ErrGone) {
		t.Errorf("Open of a reaped pid: %v, want ErrGone", err)
	}
}

// TestLeaderExitedIsAlive opens a process whose main thread has exited
// while another thread runs: /proc/PID/stat says Z, yet it lives, and a
// signal ends it.
func TestLeaderExitedIsAlive(t *testing.T) {
	pid := start(t, "python3", "-c", `import ctypes, sys, threading, time
threading.Thread(target=time.sleep, args=(100,)).start()
print("ready", flush=True)
ctypes.CDLL(None).pthread_exit(None)`)
	waitZ(t, pid)
	h, err := Open(pid, func() error { return nil })
	if err != nil {
		t.Fatalf("Open of a process whose leader exited: %v", err)
	}
	defer h.Close()
	c, ok := Child(pid)
	if h.Exited() || !ok || c.Exited() {
		t.Fatal("a process whose leader exited counts as gone")
	}
	if err := h.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if ws := reap(t, pid); ws.Signal() != syscall.SIGTERM {
		t.Errorf("status %v, want SIGTERM", ws)
	}
}

// waitZ waits until /proc says Z for pid, whose main thread is exiting.
func waitZ(t *testing.T, pid int) {
	t.Helper()
	for end := time.Now().Add(time.Minute); ; {
		if p, err := procfs.Stat(pid); err == nil && p.State == 'Z' {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("pid %d: its main thread did not exit", pid)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestWaitAll(t *testing.T) {
	pid := start(t, "sh", "-c", "echo ready; exec sleep 100")
	h, err := Open(pid, func() error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	stop := func() bool { return true }
	if WaitAll([]*Handle{h}, time.Now().Add(time.Minute), stop) {
		t.Error("WaitAll said a live process exited")
	}
	h.Signal(syscall.SIGKILL)
	if !WaitAll([]*Handle{h}, time.Now().Add(time.Minute), nil) {
		t.Error("WaitAll did not see a SIGKILLed process exit")
	}
	reap(t, pid)
}

func TestWatcher(t *testing.T) {
	pid := start(t, "sh", "-c", "echo ready; exec sleep 100")
	h, err := Open(pid, func() error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	w, err := NewWatcher()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	if err := w.Add(h, 7); err != nil {
		t.Fatal(err)
	}
	h.Signal(syscall.SIGKILL)
	select {
	case tokens := <-w.C:
		if len(tokens) != 1 || tokens[0] != 7 {
			t.Errorf("tokens %v, want [7]", tokens)
		}
	case <-time.After(time.Minute):
		t.Fatal("no exit seen")
	}
	reap(t, pid)
	if err := w.Add(Own(1, -1), 8); err == nil {
		t.Error("a handle without a pidfd was watched")
	}
}
