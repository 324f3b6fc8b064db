package logs

import (
	"bytes"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestConsoleLogLines(t *testing.T) {
	var buf bytes.Buffer
	log, err := New(&buf, Console, 2)
	if err != nil {
		t.Fatal(err)
	}
	log.Warn("killed", Int("pid", 42), String("command", "sleep 300"))
	log.Error("x: command not found")
	log.Debug("reaped", Int("pid", 7), String("status", "exit 0"), Signal("signal", syscall.SIGTERM))
	want := `reaper: warning: killed pid=42 command="sleep 300"
reaper: x: command not found
reaper: debug: reaped pid=7 status="exit 0" signal=SIGTERM
`
	if buf.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", buf.String(), want)
	}
	buf.Reset()
	quiet, _ := New(&buf, Console, 0)
	quiet.Info("started")
	quiet.Debug("reaped")
	if buf.Len() != 0 {
		t.Errorf("verbosity 0 logged %q", buf.String())
	}
	buf.Reset()
	js, _ := New(&buf, JSON, 1)
	js.Info("started", Int("pid", 3))
	if !strings.Contains(buf.String(), `"level":"info"`) || !strings.Contains(buf.String(), `"pid":3`) {
		t.Errorf("json line %q", buf.String())
	}
	if _, err := New(&buf, "xml", 0); err == nil {
		t.Error("New accepted format xml")
	}
}

// TestBrokenPipe writes to a pipe whose reader is gone: the write fails
// with EPIPE, the SIGPIPE it raised is not left pending (the thread blocks
// SIGPIPE here, as reaper's main thread may, so that a SIGPIPE left behind
// would show in its SigPnd), and the logger goes on silently.
func TestBrokenPipe(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var old unix.Sigset_t
	unix.PthreadSigmask(unix.SIG_BLOCK, sigpipe, &old)
	defer unix.PthreadSigmask(unix.SIG_SETMASK, &old, nil)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	defer w.Close()
	if _, err := FD(w.Fd()).Write([]byte("x\n")); err != unix.EPIPE {
		t.Fatalf("write to a broken pipe: %v, want EPIPE", err)
	}
	status, err := os.ReadFile("/proc/thread-self/status")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(status), "\nSigPnd:\t0000000000000000\n") {
		t.Errorf("a signal is pending on the writing thread:\n%s", status)
	}
	log, _ := New(FD(w.Fd()), Console, 0)
	log.Error("into a broken pipe")
	log.Error("and again: dropped")
}
