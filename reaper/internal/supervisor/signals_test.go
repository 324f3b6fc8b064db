package supervisor

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/reaper-init/reaper/reaper/procfs"
	"github.com/reaper-init/reaper/signals"
)

// bareChild is set in the environment of the test binary run as a Go program
// that catches no signal (see TestFatalUncaughtMatchesTheRuntime).
const bareChild = "REAPER_TEST_BARE_CHILD"

// TestFatalUncaughtMatchesTheRuntime checks fatalUncaught against the Go
// runtime itself, which start-up relies on (those signals are caught before
// reaper changes anything): in a Go program that has caught nothing, each
// member of fatalUncaught must end the program, and the other forwardable
// signals, sent one after another to one program, must leave it running.
// The job-control signals are left out: uncaught, the kernel's default
// stops or continues the program. So are signals the test's caller left
// ignored (SIGHUP under nohup): the runtime keeps them ignored, and reaper
// neither catches nor forwards them.
func TestFatalUncaughtMatchesTheRuntime(t *testing.T) {
	if os.Getenv(bareChild) != "" {
		fmt.Println("ready")
		io.Copy(io.Discard, os.Stdin) // until the test closes it, or a signal ends this program
		os.Exit(0)
	}
	survivor, stdin, stderr := startBare(t)
	ignored := inheritedIgnored()
	for _, sig := range signals.Forwardable() {
		switch {
		case ignored[sig]:
			t.Logf("%v: ignored by the test's caller, left out", sig)
		case sig == syscall.SIGTSTP || sig == syscall.SIGTTIN || sig == syscall.SIGTTOU || sig == syscall.SIGCONT:
		case fatalUncaught[sig]:
			child, _, _ := startBare(t)
			child.Process.Signal(sig)
			// SIGKILL a minute later means sig did not end it.
			deadline := time.AfterFunc(time.Minute, func() { child.Process.Signal(syscall.SIGKILL) })
			err := child.Wait()
			deadline.Stop()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL {
				t.Errorf("%v uncaught did not end the program (%v): remove it from fatalUncaught", sig, err)
			}
		default:
			survivor.Process.Signal(sig)
			waitNotPending(t, survivor.Process.Pid, sig) // delivered, and dropped unless it ends the program
		}
	}
	stdin.Close() // the program now exits 0, if every signal left it running
	if err := survivor.Wait(); err != nil {
		first, _, _ := strings.Cut(stderr.String(), "\n")
		t.Errorf("a forwardable signal outside fatalUncaught ended the program (%v: %s): add it", err, first)
	}
}

// startBare runs the test binary as a Go program that catches no signal, and
// returns once its Go code runs (the runtime's handlers are in place). It
// runs until a signal ends it or its stdin, returned, is closed.
func startBare(t *testing.T) (*exec.Cmd, io.Closer, *strings.Builder) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestFatalUncaughtMatchesTheRuntime$")
	cmd.Env = append(os.Environ(), bareChild+"=1")
	stderr := new(strings.Builder)
	cmd.Stderr = stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close() })
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("the bare program wrote %q (%v)", line, err)
	}
	return cmd, stdin, stderr
}

// waitNotPending waits until no thread of pid has sig pending: the kernel has
// delivered it.
func waitNotPending(t *testing.T, pid int, sig syscall.Signal) {
	t.Helper()
	end := time.Now().Add(time.Minute)
	for pending(pid, sig) {
		if time.Now().After(end) {
			t.Fatalf("%v still pending in pid %d after a minute", sig, pid)
		}
		time.Sleep(time.Millisecond)
	}
}

// pending reports whether sig is pending for process pid or any of its
// threads (ShdPnd and SigPnd of /proc/PID/task/*/status).
func pending(pid int, sig syscall.Signal) bool {
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, task := range tasks {
		status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, task.Name()))
		for _, key := range []string{"ShdPnd:", "SigPnd:"} {
			if mask, ok := procfs.StatusMask(status, key); ok && mask&(1<<(sig-1)) != 0 {
				return true
			}
		}
	}
	return false
}

// TestRouteMovesWhatCameEarly: a signal caught before route went where
// the default policy sends it; route moves it where the parsed policy
// gives it (with --stop-on=INT, a SIGINT is a stop request, and a SIGTERM
// is not), and one that reached both channels counts once.
func TestRouteMovesWhatCameEarly(t *testing.T) {
	saved := signalNotify
	signalNotify = func(chan<- os.Signal, ...os.Signal) {} // the test's signals are put in by hand
	defer func() { signalNotify = saved }()
	c := &Signals{sigs: make(chan os.Signal, 64), stops: make(chan os.Signal, 8)}
	c.sigs <- syscall.SIGINT // before route: the default policy's place
	c.sigs <- syscall.SIGHUP // not a stop request under either policy
	c.stops <- syscall.SIGTERM
	c.sigs <- syscall.SIGUSR1 // after route's Notify: on both channels
	c.stops <- syscall.SIGUSR1
	c.route(signals.Policy{StopOn: []syscall.Signal{syscall.SIGINT}})
	drain := func(ch chan os.Signal) []syscall.Signal {
		var got []syscall.Signal
		for len(ch) > 0 {
			got = append(got, (<-ch).(syscall.Signal))
		}
		return got
	}
	if got := drain(c.stops); !slices.Equal(got, []syscall.Signal{syscall.SIGINT}) {
		t.Errorf("stop requests %v, want [interrupt]", got)
	}
	if got := drain(c.sigs); !slices.Equal(got, []syscall.Signal{syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGTERM}) {
		t.Errorf("signals to forward %v, want [hangup user defined signal 1 terminated]", got)
	}
}
