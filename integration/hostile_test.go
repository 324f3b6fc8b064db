package integration

// Hostile input (issue 29): what other processes and other users control
// must not steer reaper: the names in its log, the --report file, escapes
// from its tree without a cgroup.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// forged are argv entries that would forge or hide log lines were they
// written raw: a fake line, a carriage return over a real one, cursor
// moves, a C1 CSI (in UTF-8 and as the raw byte of 8-bit terminals), DEL,
// invalid UTF-8.
var forged = []string{
	"\nreaper: warning: killed pid=1 command=/sbin/init",
	"\rreaper: info: teardown: 1 descendants, 1 exited after SIGTERM, 0 killed",
	"\x1b[1C\x1b[1C\x1b[2K\x1b]0;owned\x07",
	"\u009b2K",
	"\x9b2K",
	"\x7f\x7f",
	"\xff\xfe\xc0\x80",
}

// forgedName is a program name made of escape sequences: the comm of a
// process started through a link of that name is it.
const forgedName = "\x1b[1C\u009b\r"

// forgingHelper returns a link to the helper named forgedName, in a
// directory of the test's.
func forgingHelper(t *testing.T) string {
	t.Helper()
	link := filepath.Join(t.TempDir(), forgedName)
	if err := os.Symlink(bin().helper, link); err != nil {
		t.Fatal(err)
	}
	return link
}

// checkLog fails the test unless stderr, read byte by byte, is lines of
// printable UTF-8 (no control byte but the newline ending each line, no DEL,
// no C1 control), each a line of reaper's own: "reaper: ..." or a JSON
// object. It returns the lines.
func checkLog(t *testing.T, stderr []byte, json bool) []string {
	t.Helper()
	if !utf8.Valid(stderr) {
		t.Errorf("invalid UTF-8 on stderr: %q", stderr)
	}
	for i, r := range string(stderr) {
		if r != '\n' && (r < 0x20 || r == 0x7f || r >= 0x80 && r <= 0x9f || r == utf8.RuneError) {
			t.Errorf("byte %d of stderr is %U, raw: %q", i, r, stderr)
			break
		}
	}
	if len(stderr) == 0 || stderr[len(stderr)-1] != '\n' {
		t.Errorf("stderr does not end a line: %q", stderr)
	}
	lines := strings.Split(strings.TrimSuffix(string(stderr), "\n"), "\n")
	for _, line := range lines {
		if json && !strings.HasPrefix(line, "{") || !json && !strings.HasPrefix(line, "reaper: ") {
			t.Errorf("a line that is not reaper's: %q\nstderr: %q", line, stderr)
		}
		if strings.HasPrefix(line, "reaper: warning: killed pid=1 ") {
			t.Errorf("a forged line: %q", line)
		}
	}
	return lines
}

func TestForgedNamesCannotForgeTheLog(t *testing.T) {
	evil := forgingHelper(t)
	for _, format := range []string{"console", "json"} {
		t.Run(format, func(t *testing.T) {
			t.Run("descendant", func(t *testing.T) { forgedDescendant(t, evil, format) })
			t.Run("port holder", func(t *testing.T) { forgedPortHolder(t, evil, format) })
		})
	}
}

// forgedDescendant runs a descendant named evil whose argv holds every
// forged entry and which ignores SIGTERM: reaper names it as it signals it
// (-vv: its comm) and as it kills it (its command line).
func forgedDescendant(t *testing.T, evil, format string) {
	rec, gate := newFIFO(t, "rec"), newFIFO(t, "gate")
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	script := `"$EVIL" record -stay "$R" "$@" & read x < "$G"`
	args := append([]string{"-vv", "--log-format=" + format, "--grace=200ms", "--", "sh", "-c", script, "sh"}, forged...)
	cmd := exec.CommandContext(ctx, bin().reaper, args...)
	cmd.Env = append(os.Environ(), "EVIL="+evil, "R="+rec.path, "G="+gate.path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var pid int
	if _, err := fmt.Sscanf(rec.next(t), "ready %d", &pid); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	defer unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0) // should reaper leave it
	gate.f.Write([]byte("go\n"))
	if err := cmd.Wait(); err != nil {
		t.Fatalf("reaper: %v\n%q", err, stderr.Bytes())
	}
	lines := checkLog(t, stderr.Bytes(), format == "json")
	cmdline := strings.Join(append([]string{evil, "record", "-stay", rec.path}, forged...), " ")
	killed, signalled := false, false
	for _, line := range lines {
		if format == "console" {
			killed = killed || line == fmt.Sprintf("reaper: warning: killed pid=%d command=%s", pid, strconv.Quote(cmdline))
			signalled = signalled || strings.Contains(line, fmt.Sprintf("signalled pid=%d comm=%s signal=SIGTERM", pid, strconv.Quote(forgedName)))
			continue
		}
		var entry map[string]any
		if err := json.Unmarshal([]byte(line), &entry); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		// What is valid UTF-8 reads back unchanged (the rest as U+FFFD).
		killed = killed || entry["msg"] == "killed" && entry["pid"] == float64(pid) &&
			strings.HasPrefix(entry["command"].(string), strings.Join(append([]string{evil, "record", "-stay", rec.path}, forged[:4]...), " "))
		signalled = signalled || entry["msg"] == "signalled" && entry["pid"] == float64(pid) && entry["comm"] == forgedName
	}
	if !killed || !signalled {
		t.Errorf("no line names pid %d as killed (%v) and signalled (%v), escaped:\n%s", pid, killed, signalled, stderr.Bytes())
	}
}

// forgedPortHolder makes a listener named evil, with the forged entries in
// its argv, hold the port reaper waits for: reaper names it while it waits
// and in the error when it gives up.
func forgedPortHolder(t *testing.T, evil, format string) {
	addr, ready := freeAddr(t), newFIFO(t, "listening")
	holder := exec.Command(evil, append([]string{"listen", addr, ready.path}, forged...)...)
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer holder.Wait()
	defer holder.Process.Kill()
	ready.next(t)
	code, _, stderr := runReaper(t, nil, "--log-format="+format, "--wait-port="+portOf(addr), "--wait-port-timeout=100ms", "true")
	if code != 2 {
		t.Errorf("exit %d, want 2", code)
	}
	lines := checkLog(t, []byte(stderr), format == "json")
	if len(lines) != 2 || !strings.Contains(lines[0], "port is held") || !strings.Contains(lines[1], fmt.Sprintf("still held by pid %d", holder.Process.Pid)) {
		t.Errorf("want a warning and an error naming holder %d:\n%s", holder.Process.Pid, stderr)
	}
	if format == "console" && !strings.Contains(stderr, `\nreaper: warning: killed pid=1 command=/sbin/init \rreaper: info`) {
		t.Errorf("the holder's command line is not escaped visibly:\n%s", stderr)
	}
}
