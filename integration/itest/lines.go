package itest

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// Lines collects a stream line by line and lets a test wait for a line.
type Lines struct {
	mu     sync.Mutex
	all    []string
	grew   chan struct{}
	Closed chan struct{} // closed once the stream has ended and every line is in
}

// NewLines returns an empty Lines; Collect fills it.
func NewLines() *Lines {
	return &Lines{grew: make(chan struct{}), Closed: make(chan struct{})}
}

// Collect reads r line by line into l until r ends, then closes l.Closed.
func (l *Lines) Collect(r io.Reader) {
	l.collect(r, "", nil)
}

// collect reads r line by line into l until r ends, then closes l.Closed.
// A line that ends with mark closes marked, once, and is kept without the
// mark (a writer killed mid-line leaves its part before the mark).
func (l *Lines) collect(r io.Reader, mark string, marked chan struct{}) {
	defer close(l.Closed)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if marked != nil && strings.HasSuffix(line, mark) {
			close(marked)
			marked = nil
			if line = strings.TrimSuffix(line, mark); line == "" {
				continue
			}
		}
		l.mu.Lock()
		l.all = append(l.all, line)
		close(l.grew)
		l.grew = make(chan struct{})
		l.mu.Unlock()
	}
}

// Snapshot returns the lines seen so far, and a channel closed when the
// next one comes.
func (l *Lines) Snapshot() ([]string, chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.all...), l.grew
}

// String returns the lines seen so far, joined by newlines.
func (l *Lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.all, "\n")
}

// WaitFor blocks until every pattern has matched some line, and returns
// the lines seen so far.
func (l *Lines) WaitFor(t testing.TB, patterns ...*regexp.Regexp) []string {
	t.Helper()
	return l.waitUntil(t, fmt.Sprintf("%d patterns", len(patterns)), func(seen []string) bool {
		for _, p := range patterns {
			if len(matching(seen, p)) == 0 {
				return false
			}
		}
		return true
	})
}

// WaitCount blocks until n lines match pattern, and returns them.
func (l *Lines) WaitCount(t testing.TB, pattern *regexp.Regexp, n int) []string {
	t.Helper()
	seen := l.waitUntil(t, fmt.Sprintf("%d lines matching %s", n, pattern), func(seen []string) bool {
		return len(matching(seen, pattern)) >= n
	})
	return matching(seen, pattern)
}

// waitUntil blocks until done says yes to the lines seen so far, and
// returns them; it fails the test, saying what it waited for, when the
// stream ends first or after the deadline.
func (l *Lines) waitUntil(t testing.TB, what string, done func(seen []string) bool) []string {
	t.Helper()
	timeout := time.After(Deadline)
	for {
		seen, grew := l.Snapshot()
		if done(seen) {
			return seen
		}
		select {
		case <-grew:
		case <-l.Closed:
			t.Fatalf("stream ended without %s:\n%s", what, strings.Join(seen, "\n"))
		case <-timeout:
			t.Fatalf("no %s after %v:\n%s", what, Deadline, strings.Join(seen, "\n"))
		}
	}
}

// matching returns the lines that match pattern.
func matching(lines []string, pattern *regexp.Regexp) []string {
	var out []string
	for _, line := range lines {
		if pattern.MatchString(line) {
			out = append(out, line)
		}
	}
	return out
}

// Mark returns how many lines l holds now.
func (l *Lines) Mark() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.all)
}

// WaitMatches blocks until n lines past the first from match re.
func (l *Lines) WaitMatches(t testing.TB, from int, re *regexp.Regexp, n int) {
	t.Helper()
	timeout := time.After(Deadline)
	for {
		l.mu.Lock()
		seen, grew := l.all, l.grew
		l.mu.Unlock()
		found := 0
		for i := from; i < len(seen); i++ {
			if re.MatchString(seen[i]) {
				if found++; found == n {
					return
				}
			}
		}
		select {
		case <-grew:
		case <-l.Closed:
			t.Fatalf("stream ended with %d of %d lines matching %s:\n%s", found, n, re, strings.Join(seen, "\n"))
		case <-timeout:
			t.Fatalf("%d of %d lines matching %s after %v:\n%s", found, n, re, Deadline, strings.Join(seen, "\n"))
		}
	}
}

// Matching counts the lines of l that match re.
func (l *Lines) Matching(re *regexp.Regexp) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range l.all {
		if re.MatchString(line) {
			n++
		}
	}
	return n
}
