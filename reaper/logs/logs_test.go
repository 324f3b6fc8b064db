package logs

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"unicode/utf8"

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

// hostile are values another process controls (its argv, its comm), each
// a way to forge or hide a log line on a terminal.
var hostile = []string{
	"evil\nreaper: warning: killed pid=1 command=/sbin/init",
	"erase\rreaper: all descendants exited after SIGTERM",
	"sleep\x1b[1C300\x1b[2K\x1b]0;title\x07",
	"csi\u009b2Kgone",
	"del\x7fdel",
	"bad utf-8 \xff\xfe\xc2",
	"nul\x00and tab\t",
	"bidi \u202eevil",
}

// checkClean fails unless out is lines of printable text: valid UTF-8, no
// control but the newline that ends each line, want lines in all.
func checkClean(t *testing.T, out []byte, want int) {
	t.Helper()
	if !utf8.Valid(out) {
		t.Errorf("invalid UTF-8 in the log: %q", out)
	}
	for i, r := range string(out) {
		if r == '\n' {
			continue
		}
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f) {
			t.Errorf("control %U at byte %d of the log: %q", r, i, out)
		}
	}
	if n := bytes.Count(out, []byte("\n")); n != want {
		t.Errorf("%d lines, want %d: %q", n, want, out)
	}
}

func TestHostileValuesAreEscaped(t *testing.T) {
	for _, format := range []string{Console, JSON} {
		var buf bytes.Buffer
		log, _ := New(&buf, format, 2)
		for _, v := range hostile {
			log.Warn("killed", Int("pid", 42), String("command", v))
			log.Error("port 80 is still held by "+v, Err(errors.New(v)))
		}
		checkClean(t, buf.Bytes(), 2*len(hostile))
		if format == Console {
			if !strings.Contains(buf.String(), `reaper: warning: killed pid=42 command="evil\nreaper: warning: killed pid=1 command=/sbin/init"`) ||
				!strings.Contains(buf.String(), `reaper: port 80 is still held by sleep\x1b[1C300`) ||
				!strings.Contains(buf.String(), `held by csi\u009b2Kgone error="csi\u009b2Kgone"`) ||
				!strings.Contains(buf.String(), `held by bad utf-8 \xff\xfe\xc2`) {
				t.Errorf("console escapes:\n%s", buf.String())
			}
			continue
		}
		// JSON: the same values read back, but for invalid UTF-8.
		for i, line := range strings.SplitAfter(strings.TrimSuffix(buf.String(), "\n"), "\n") {
			var entry map[string]any
			if err := json.Unmarshal([]byte(line), &entry); err != nil {
				t.Fatalf("line %q: %v", line, err)
			}
			v := hostile[i/2]
			if !utf8.ValidString(v) {
				continue
			}
			if got := entry["command"]; i%2 == 0 && got != v {
				t.Errorf("json command %q, want %q", got, v)
			}
			if got := entry["msg"]; i%2 == 1 && got != "port 80 is still held by "+v {
				t.Errorf("json msg %q", got)
			}
		}
	}
}

func TestEscapeKeepsSafeText(t *testing.T) {
	for _, s := range []string{"", "sleep 300", `C:\path "quoted" é 日本`, "a=b"} {
		if got := Escape(s); got != s {
			t.Errorf("Escape(%q) = %q", s, got)
		}
	}
	if got := Escape("a\nb\x1b\u009b\xff\x7f"); got != `a\nb\x1b\u009b\xff\x7f` {
		t.Errorf("Escape = %q", got)
	}
}

func FuzzLogLine(f *testing.F) {
	for _, v := range hostile {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v string) {
		for _, format := range []string{Console, JSON} {
			var buf bytes.Buffer
			log, _ := New(&buf, format, 0)
			log.Warn(v, String(v, v), Err(errors.New(v)))
			checkClean(t, buf.Bytes(), 1)
		}
		if e := Escape(v); !safe(e) || (safe(v) && e != v) {
			t.Errorf("Escape(%q) = %q", v, e)
		}
	})
}
