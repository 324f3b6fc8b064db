package record

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func gone(ms float64) *float64 { return &ms }

// TestSummary: a table of what COMMAND left, COMMAND itself not listed;
// nothing when it left nothing.
func TestSummary(t *testing.T) {
	r := Report{
		Command:       []string{"make", "test"},
		CommandStatus: &CommandStatus{PID: 10, Exited: true},
		Teardown: &TeardownReport{Reason: "command exited", StopSignal: "SIGTERM", GraceMS: 5000, TotalMS: 5020,
			Descendants: []DescendantReport{
				{PID: 11, Command: "sleep 300", Signal: "SIGTERM", Outcome: Exited, GoneMS: gone(12)},
				{PID: 12, Command: `sh -c trap "" TERM`, Signal: "SIGTERM", Outcome: Killed, GoneMS: gone(5010)},
			}},
	}
	got := summary(r, time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC))
	for _, want := range []string{
		"#### reaper: make test left 2 processes (when it exited)",
		"| 11 | sleep 300 | exited after SIGTERM | 12ms |",
		`| 12 | sh -c trap "" TERM | killed (SIGKILL after the 5s grace period) | 5.01s |`,
		"The stop began 2026-12-06T11:59:54Z",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("summary lacks %q:\n%s", want, got)
		}
	}
	r.Teardown.Descendants = []DescendantReport{{PID: 10, Command: "make test", Outcome: Exited, GoneMS: gone(1)}}
	if got := summary(r, time.Now()); got != "" {
		t.Errorf("COMMAND alone gave a summary:\n%s", got)
	}
	r.Teardown = nil
	if got := summary(r, time.Now()); got != "" {
		t.Errorf("no stop gave a summary:\n%s", got)
	}
}

// TestMarkdownCell: what another process put in its command line cannot
// break out of its cell, format, link or inject HTML.
func TestMarkdownCell(t *testing.T) {
	for in, want := range map[string]string{
		"sleep 300":              "sleep 300",
		"a | b":                  `a \| b`,
		"<script>x</script>":     "&lt;script&gt;x&lt;/script&gt;",
		"[click](http://x)":      `\[click\](http://x)`,
		"`rm -rf`":               "\\`rm -rf\\`",
		"line\nbreak\r\x1b[1C":   `line\u000abreak\u000d\u001b\[1C`,
		"bad \xff byte":          `bad \xff byte`,
		"\u009b31m":              `\u009b31m`,
		strings.Repeat("x", 300): strings.Repeat("x", 200) + "…",
	} {
		if got := markdownCell(in); got != want {
			t.Errorf("markdownCell(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestAppendSummary appends to a regular file, and refuses a FIFO or a
// link without blocking or following it.
func TestAppendSummary(t *testing.T) {
	dir := t.TempDir()
	r := Report{Command: []string{"x"}, Teardown: &TeardownReport{Descendants: []DescendantReport{{PID: 2, Command: "y", Outcome: Exited}}}}
	file := filepath.Join(dir, "summary.md")
	os.WriteFile(file, []byte("before\n"), 0o644)
	if err := AppendSummary(file, r, time.Now()); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(file); !strings.HasPrefix(string(data), "before\n") || !strings.Contains(string(data), "| 2 | y |") {
		t.Errorf("file:\n%s", data)
	}
	fifo := filepath.Join(dir, "fifo")
	syscall.Mkfifo(fifo, 0o644)
	if err := AppendSummary(fifo, r, time.Now()); err == nil {
		t.Error("a FIFO was written")
	}
	link := filepath.Join(dir, "link")
	os.Symlink(file, link)
	if err := AppendSummary(link, r, time.Now()); err == nil {
		t.Error("a link was followed")
	}
	if err := AppendSummary(filepath.Join(dir, "missing"), r, time.Now()); err == nil {
		t.Error("a missing file was created")
	}
}
