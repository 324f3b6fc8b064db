package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Deadline bounds every wait in these tests: a test that would hang fails.
const Deadline = 60 * time.Second

// Opts describes one run of reaper.
type Opts struct {
	Args []string // reaper's flags, then COMMAND
	PID1 bool     // reaper runs as PID 1 of a new PID namespace
	// NoMountProc leaves the namespace with the parent's /proc.
	NoMountProc bool
	PidsMax     int  // run inside a fresh cgroup with this pids.max (0: 512)
	NoCgroup    bool // run without a cgroup (as non-root)
	// Alone keeps the harness, a Go program whose thread count varies, out
	// of the fresh cgroup: reaper joins it by itself (see joinCgroup), so
	// pids.max counts reaper and its tree only.
	Alone   bool
	Env     []string // added to the environment
	Stdin   io.Reader
	Stdout  io.Writer
	Binary  string   // reaper binary to run (default bin().reaper)
	Cgroup  *Cgroup  // run in this cgroup, which the test owns (default: a fresh one)
	Leave   bool     // leave what reaper leaves running (the test's cgroup cleans up)
	Command []string // run this instead of reaper with args (benchmarks: the peers)
	// Prefix runs the harness itself under this command line (nsenter into
	// a namespace of the test's).
	Prefix []string
	Dir    string // the working directory reaper starts in (default the test's)
}

// Result is how a run ended, as the harness saw it.
type Result struct {
	Code      int      `json:"code"`
	Signal    int      `json:"signal"`
	Core      bool     `json:"core"`
	Survivors []string `json:"survivors"`
	Zombies   []string `json:"zombies"`
	InCgroup  []int    `json:"in_cgroup"`
	ExitNS    int64    `json:"exit_ns"`
	Stderr    string   `json:"-"`
}

// Status is how a shell reports reaper's end: its exit code, or 128+S
// when signal S ended it.
func (r *Result) Status() int {
	if r.Signal != 0 {
		return 128 + r.Signal
	}
	return r.Code
}

// Leftovers describes what reaper left behind, "" when nothing: processes
// reparented to the harness, zombies, and processes left in the cgroup.
func (r *Result) Leftovers() string {
	if len(r.Survivors)+len(r.Zombies)+len(r.InCgroup) == 0 {
		return ""
	}
	return fmt.Sprintf("survivors %q, zombies %q, in the cgroup %v", r.Survivors, r.Zombies, r.InCgroup)
}

// Session is one running reaper, under the harness.
type Session struct {
	t      testing.TB
	cmd    *exec.Cmd
	report *bufio.Reader
	Stderr *Lines
	Cgroup *Cgroup
	Child  int // the harness's child: reaper, or unshare with pid1
	pid1   bool
	result *Result
	Ended  chan struct{}
	argv   []string // what the harness runs
}

// Start runs reaper with o under the harness and waits until it runs.
func Start(t testing.TB, o Opts) *Session {
	t.Helper()
	s := &Session{t: t, pid1: o.PID1, Stderr: NewLines(), Ended: make(chan struct{})}
	if o.Alone && (o.Cgroup != nil || o.NoCgroup) {
		t.Fatal("opts.alone needs the fresh cgroup start makes")
	}
	argv := []string{} // the harness's flags, then "--" and what it runs
	var join []string  // with alone: the shell that joins the cgroup first
	switch {
	case o.Cgroup != nil:
		for _, dir := range o.Cgroup.dirs() {
			argv = append(argv, "-cgroup", dir)
		}
	case !o.NoCgroup:
		max := o.PidsMax
		if max == 0 {
			max = 512
		}
		s.Cgroup = NewCgroup(t, max)
		if o.Alone {
			join = JoinArgv()
			o.Env = append(o.Env, s.Cgroup.JoinEnv()...)
			break
		}
		for _, dir := range s.Cgroup.dirs() {
			argv = append(argv, "-cgroup", dir)
		}
	}
	if o.Leave {
		argv = append(argv, "-leave")
	}
	argv = append(append(argv, "--"), join...)
	if o.PID1 {
		RequireRoot(t)
		argv = append(argv, "unshare", "--pid", "--fork", "--kill-child")
		if !o.NoMountProc {
			argv = append(argv, "--mount-proc")
		}
		argv = append(argv, "--")
	}
	if o.Binary == "" {
		o.Binary = Bin().Reaper
	}
	if o.Command != nil {
		argv = append(argv, o.Command...)
	} else {
		argv = append(argv, o.Binary)
		argv = append(argv, o.Args...)
	}
	s.argv = argv[slices.Index(argv, "--")+1:]
	harness := append(append(append([]string{}, o.Prefix...), Bin().Harness), argv...)
	s.cmd = exec.Command(harness[0], harness[1:]...)
	s.cmd.Env = append(os.Environ(), o.Env...)
	s.cmd.Dir = o.Dir
	s.cmd.Stdin, s.cmd.Stdout = o.Stdin, o.Stdout
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	s.cmd.ExtraFiles = []*os.File{pw}
	stderr, err := s.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	go s.Stderr.Collect(stderr)
	s.report = bufio.NewReader(pr)
	line, err := s.report.ReadString('\n')
	if _, scanErr := fmt.Sscanf(line, "pid %d", &s.Child); err != nil || scanErr != nil {
		s.cmd.Wait()
		t.Fatalf("harness did not start reaper: %q %v\nstderr:\n%s", line, err, s.Stderr)
	}
	go s.collect(pr)
	t.Cleanup(s.cleanup)
	return s
}

// collect reads the harness's final line.
func (s *Session) collect(pr *os.File) {
	defer close(s.Ended)
	defer pr.Close()
	line, _ := s.report.ReadString('\n')
	s.cmd.Wait()
	<-s.Stderr.Closed
	var r Result
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		r.Code = -1
		r.Stderr = fmt.Sprintf("harness gave no result (%v): %q\n", err, line)
	}
	r.Stderr += s.Stderr.String()
	s.result = &r
}

// Wait returns how reaper ended; the test fails after the deadline.
func (s *Session) Wait() *Result {
	s.t.Helper()
	select {
	case <-s.Ended:
		return s.result
	case <-time.After(Deadline):
		s.t.Fatalf("%s did not exit within %v\nstderr:\n%s", s.cmd.Args[len(s.cmd.Args)-len(s.argv):], Deadline, s.Stderr)
		return nil
	}
}

// cleanup kills what is left if the test ended early.
func (s *Session) cleanup() {
	select {
	case <-s.Ended:
	default:
		if s.Cgroup != nil {
			s.Cgroup.Kill()
		} else {
			syscall.Kill(s.Child, syscall.SIGKILL)
		}
		s.cmd.Process.Kill()
		<-s.Ended
	}
	if s.Cgroup != nil {
		s.Cgroup.Remove(s.t)
	}
}

// ReaperPID is reaper's pid as the test sees it (the host's, with pid1).
func (s *Session) ReaperPID() int {
	s.t.Helper()
	if !s.pid1 {
		return s.Child
	}
	kids := ChildrenOf(s.Child)
	if len(kids) != 1 {
		s.t.Fatalf("unshare (pid %d) has children %v, want reaper alone", s.Child, kids)
	}
	return kids[0]
}

// Signal sends sig to reaper.
func (s *Session) Signal(sig syscall.Signal) {
	s.t.Helper()
	if err := syscall.Kill(s.ReaperPID(), sig); err != nil {
		s.t.Fatalf("kill reaper: %v", err)
	}
}

// ChildrenOf lists the children of every thread of pid.
func ChildrenOf(pid int) []int {
	var kids []int
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, task := range tasks {
		data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, task.Name()))
		for _, f := range strings.Fields(string(data)) {
			if kid, err := strconv.Atoi(f); err == nil {
				kids = append(kids, kid)
			}
		}
	}
	return kids
}

// StatFields returns the fields of /proc/PID/stat after the command name
// (field 3, the state, first), or nil when pid is gone.
func StatFields(pid int) []string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(data[i+1:]))
}

// ProcState returns the state letter of pid from /proc/PID/stat, or 0.
func ProcState(pid int) byte {
	if f := StatFields(pid); len(f) > 0 {
		return f[0][0]
	}
	return 0
}

// InnermostPID returns pid's number in its own PID namespace (the last
// NSpid entry of /proc/PID/status), and whether that namespace is nested
// below the one of the /proc it was read from.
func InnermostPID(pid int) (int, bool) {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "NSpid:" {
			ns, err := strconv.Atoi(f[len(f)-1])
			if err != nil {
				return 0, false
			}
			return ns, len(f) > 2
		}
	}
	return 0, false
}

// FirstBelow returns the first process, root or below it, breadth first,
// for which match is true, or 0.
func FirstBelow(root int, match func(pid int) bool) int {
	queue := []int{root}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		if match(pid) {
			return pid
		}
		queue = append(queue, ChildrenOf(pid)...)
	}
	return 0
}

// Lines collects a stream line by line and lets a test wait for a line.
type Lines struct {
	mu     sync.Mutex
	all    []string
	grew   chan struct{}
	Closed chan struct{}
}

func NewLines() *Lines {
	return &Lines{grew: make(chan struct{}), Closed: make(chan struct{})}
}

func (l *Lines) Collect(r io.Reader) {
	defer close(l.Closed)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		l.mu.Lock()
		l.all = append(l.all, sc.Text())
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

// RequireRoot skips tests that need privileges this run does not have.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Skip(t, "needs root (PID namespaces, cgroups); CI runs as root")
	}
}

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
