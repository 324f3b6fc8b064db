package itest

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// FIFO is a named pipe a payload writes lines into and the test reads.
type FIFO struct {
	Path   string
	File   *os.File
	Reader *bufio.Reader
}

// NewFIFO makes a FIFO in the test's temporary directory and opens it for
// reading. Opening it read-write never blocks and never sees end of file.
func NewFIFO(t testing.TB, name string) *FIFO {
	t.Helper()
	path := SharedDir(t) + "/" + name
	if err := syscall.Mkfifo(path, 0o666); err != nil {
		t.Fatal(err)
	}
	os.Chmod(path, 0o666) // past the umask: unprivileged payloads write here too
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return &FIFO{Path: path, File: f, Reader: bufio.NewReader(f)}
}

// SharedDir returns a temporary directory anyone may use, for payloads run
// as an unprivileged user.
func SharedDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	// The test's own temporary directory holds it, 0700 too.
	if err := os.Chmod(filepath.Dir(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o1777); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Next returns the next line, failing the test after the deadline.
func (p *FIFO) Next(t testing.TB) string {
	t.Helper()
	return p.NextWithin(t, Deadline)
}

// NextWithin returns the next line, failing the test after d.
func (p *FIFO) NextWithin(t testing.TB, d time.Duration) string {
	t.Helper()
	line, err := p.TryNext(d)
	if err != nil {
		t.Fatalf("reading %s: %v (got %q)", p.Path, err, line)
	}
	return line
}

// TryNext returns the next line, or an error after d.
func (p *FIFO) TryNext(d time.Duration) (string, error) {
	p.File.SetReadDeadline(time.Now().Add(d))
	line, err := p.Reader.ReadString('\n')
	return strings.TrimSuffix(line, "\n"), err
}

// Ready reads the helper's "ready PID" line and returns the pid.
func (p *FIFO) Ready(t testing.TB) int {
	t.Helper()
	line := p.Next(t)
	var pid int
	if _, err := fmt.Sscanf(line, "ready %d", &pid); err != nil {
		t.Fatalf("want a ready line, got %q", line)
	}
	return pid
}

// Rest returns every line already in the pipe: call it once the writer is
// known to be gone. (A deadline already past would make Go skip the read, so
// it gets a short one; the data is there or will never come.)
func (p *FIFO) Rest() []string {
	p.File.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	var out []string
	for {
		line, err := p.Reader.ReadString('\n')
		if err != nil {
			return out
		}
		out = append(out, strings.TrimSuffix(line, "\n"))
	}
}
