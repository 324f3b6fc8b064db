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

// deadline bounds every wait in these tests: a test that would hang fails.
const deadline = 60 * time.Second

// opts describes one run of reaper.
type opts struct {
	args []string // reaper's flags, then COMMAND
	pid1 bool     // reaper runs as PID 1 of a new PID namespace
	// noMountProc leaves the namespace with the parent's /proc.
	noMountProc bool
	pidsMax     int  // run inside a fresh cgroup with this pids.max (0: 512)
	noCG        bool // run without a cgroup (as non-root)
	// alone keeps the harness, a Go program whose thread count varies, out
	// of the fresh cgroup: reaper joins it by itself (see joinCgroup), so
	// pids.max counts reaper and its tree only.
	alone   bool
	env     []string // added to the environment
	stdin   io.Reader
	stdout  io.Writer
	binary  string     // reaper binary to run (default bin().reaper)
	cg      *testGroup // run in this cgroup, which the test owns (default: a fresh one)
	leave   bool       // leave what reaper leaves running (the test's cgroup cleans up)
	command []string   // run this instead of reaper with args (benchmarks: the peers)
	// prefix runs the harness itself under this command line (nsenter into
	// a namespace of the test's).
	prefix []string
	dir    string // the working directory reaper starts in (default the test's)
}

// result is how a run ended, as the harness saw it.
type result struct {
	Code      int      `json:"code"`
	Signal    int      `json:"signal"`
	Core      bool     `json:"core"`
	Survivors []string `json:"survivors"`
	Zombies   []string `json:"zombies"`
	InCgroup  []int    `json:"in_cgroup"`
	ExitNS    int64    `json:"exit_ns"`
	Stderr    string   `json:"-"`
}

// status is how a shell reports reaper's end: its exit code, or 128+S
// when signal S ended it.
func (r *result) status() int {
	if r.Signal != 0 {
		return 128 + r.Signal
	}
	return r.Code
}

// leftovers describes what reaper left behind, "" when nothing: processes
// reparented to the harness, zombies, and processes left in the cgroup.
func (r *result) leftovers() string {
	if len(r.Survivors)+len(r.Zombies)+len(r.InCgroup) == 0 {
		return ""
	}
	return fmt.Sprintf("survivors %q, zombies %q, in the cgroup %v", r.Survivors, r.Zombies, r.InCgroup)
}

// session is one running reaper, under the harness.
type session struct {
	t      testing.TB
	cmd    *exec.Cmd
	report *bufio.Reader
	stderr *lines
	cg     *testGroup
	child  int // the harness's child: reaper, or unshare with pid1
	pid1   bool
	result *result
	ended  chan struct{}
	argv   []string // what the harness runs
}

// start runs reaper with o under the harness and waits until it runs.
func start(t testing.TB, o opts) *session {
	t.Helper()
	s := &session{t: t, pid1: o.pid1, stderr: newLines(), ended: make(chan struct{})}
	if o.alone && (o.cg != nil || o.noCG) {
		t.Fatal("opts.alone needs the fresh cgroup start makes")
	}
	argv := []string{} // the harness's flags, then "--" and what it runs
	var join []string  // with alone: the shell that joins the cgroup first
	switch {
	case o.cg != nil:
		for _, dir := range o.cg.dirs() {
			argv = append(argv, "-cgroup", dir)
		}
	case !o.noCG:
		max := o.pidsMax
		if max == 0 {
			max = 512
		}
		s.cg = newCgroup(t, max)
		if o.alone {
			join = joinArgv()
			o.env = append(o.env, s.cg.joinEnv()...)
			break
		}
		for _, dir := range s.cg.dirs() {
			argv = append(argv, "-cgroup", dir)
		}
	}
	if o.leave {
		argv = append(argv, "-leave")
	}
	argv = append(append(argv, "--"), join...)
	if o.pid1 {
		requireRoot(t)
		argv = append(argv, "unshare", "--pid", "--fork", "--kill-child")
		if !o.noMountProc {
			argv = append(argv, "--mount-proc")
		}
		argv = append(argv, "--")
	}
	if o.binary == "" {
		o.binary = bin().reaper
	}
	if o.command != nil {
		argv = append(argv, o.command...)
	} else {
		argv = append(argv, o.binary)
		argv = append(argv, o.args...)
	}
	s.argv = argv[slices.Index(argv, "--")+1:]
	harness := append(append(append([]string{}, o.prefix...), bin().harness), argv...)
	s.cmd = exec.Command(harness[0], harness[1:]...)
	s.cmd.Env = append(os.Environ(), o.env...)
	s.cmd.Dir = o.dir
	s.cmd.Stdin, s.cmd.Stdout = o.stdin, o.stdout
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
	go s.stderr.readFrom(stderr)
	s.report = bufio.NewReader(pr)
	line, err := s.report.ReadString('\n')
	if _, scanErr := fmt.Sscanf(line, "pid %d", &s.child); err != nil || scanErr != nil {
		s.cmd.Wait()
		t.Fatalf("harness did not start reaper: %q %v\nstderr:\n%s", line, err, s.stderr)
	}
	go s.collect(pr)
	t.Cleanup(s.cleanup)
	return s
}

// collect reads the harness's final line.
func (s *session) collect(pr *os.File) {
	defer close(s.ended)
	defer pr.Close()
	line, _ := s.report.ReadString('\n')
	s.cmd.Wait()
	<-s.stderr.closed
	var r result
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		r.Code = -1
		r.Stderr = fmt.Sprintf("harness gave no result (%v): %q\n", err, line)
	}
	r.Stderr += s.stderr.String()
	s.result = &r
}

// wait returns how reaper ended; the test fails after the deadline.
func (s *session) wait() *result {
	s.t.Helper()
	select {
	case <-s.ended:
		return s.result
	case <-time.After(deadline):
		s.t.Fatalf("%s did not exit within %v\nstderr:\n%s", s.cmd.Args[len(s.cmd.Args)-len(s.argv):], deadline, s.stderr)
		return nil
	}
}

// cleanup kills what is left if the test ended early.
func (s *session) cleanup() {
	select {
	case <-s.ended:
	default:
		if s.cg != nil {
			s.cg.kill()
		} else {
			syscall.Kill(s.child, syscall.SIGKILL)
		}
		s.cmd.Process.Kill()
		<-s.ended
	}
	if s.cg != nil {
		s.cg.remove(s.t)
	}
}

// reaperPID is reaper's pid as the test sees it (the host's, with pid1).
func (s *session) reaperPID() int {
	s.t.Helper()
	if !s.pid1 {
		return s.child
	}
	kids := childrenOf(s.child)
	if len(kids) != 1 {
		s.t.Fatalf("unshare (pid %d) has children %v, want reaper alone", s.child, kids)
	}
	return kids[0]
}

// signal sends sig to reaper.
func (s *session) signal(sig syscall.Signal) {
	s.t.Helper()
	if err := syscall.Kill(s.reaperPID(), sig); err != nil {
		s.t.Fatalf("kill reaper: %v", err)
	}
}

// childrenOf lists the children of every thread of pid.
func childrenOf(pid int) []int {
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

// statFields returns the fields of /proc/PID/stat after the command name
// (field 3, the state, first), or nil when pid is gone.
func statFields(pid int) []string {
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

// procState returns the state letter of pid from /proc/PID/stat, or 0.
func procState(pid int) byte {
	if f := statFields(pid); len(f) > 0 {
		return f[0][0]
	}
	return 0
}

// innermostPID returns pid's number in its own PID namespace (the last
// NSpid entry of /proc/PID/status), and whether that namespace is nested
// below the one of the /proc it was read from.
func innermostPID(pid int) (int, bool) {
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

// firstBelow returns the first process, root or below it, breadth first,
// for which match is true, or 0.
func firstBelow(root int, match func(pid int) bool) int {
	queue := []int{root}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		if match(pid) {
			return pid
		}
		queue = append(queue, childrenOf(pid)...)
	}
	return 0
}

// lines collects a stream line by line and lets a test wait for a line.
type lines struct {
	mu     sync.Mutex
	all    []string
	grew   chan struct{}
	closed chan struct{}
}

func newLines() *lines {
	return &lines{grew: make(chan struct{}), closed: make(chan struct{})}
}

func (l *lines) readFrom(r io.Reader) {
	defer close(l.closed)
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

func (l *lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.all, "\n")
}

// waitFor blocks until every pattern has matched some line, and returns
// the lines seen so far.
func (l *lines) waitFor(t testing.TB, patterns ...*regexp.Regexp) []string {
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

// waitCount blocks until n lines match pattern, and returns them.
func (l *lines) waitCount(t testing.TB, pattern *regexp.Regexp, n int) []string {
	t.Helper()
	seen := l.waitUntil(t, fmt.Sprintf("%d lines matching %s", n, pattern), func(seen []string) bool {
		return len(matching(seen, pattern)) >= n
	})
	return matching(seen, pattern)
}

// waitUntil blocks until done says yes to the lines seen so far, and
// returns them; it fails the test, saying what it waited for, when the
// stream ends first or after the deadline.
func (l *lines) waitUntil(t testing.TB, what string, done func(seen []string) bool) []string {
	t.Helper()
	timeout := time.After(deadline)
	for {
		l.mu.Lock()
		seen, grew := append([]string(nil), l.all...), l.grew
		l.mu.Unlock()
		if done(seen) {
			return seen
		}
		select {
		case <-grew:
		case <-l.closed:
			t.Fatalf("stream ended without %s:\n%s", what, strings.Join(seen, "\n"))
		case <-timeout:
			t.Fatalf("no %s after %v:\n%s", what, deadline, strings.Join(seen, "\n"))
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

// requireRoot skips tests that need privileges this run does not have.
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		skip(t, "needs root (PID namespaces, cgroups); CI runs as root")
	}
}

// fifo is a named pipe a payload writes lines into and the test reads.
type fifo struct {
	path string
	f    *os.File
	r    *bufio.Reader
}

// newFIFO makes a FIFO in the test's temporary directory and opens it for
// reading. Opening it read-write never blocks and never sees end of file.
func newFIFO(t testing.TB, name string) *fifo {
	t.Helper()
	path := sharedDir(t) + "/" + name
	if err := syscall.Mkfifo(path, 0o666); err != nil {
		t.Fatal(err)
	}
	os.Chmod(path, 0o666) // past the umask: unprivileged payloads write here too
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return &fifo{path: path, f: f, r: bufio.NewReader(f)}
}

// sharedDir returns a temporary directory anyone may use, for payloads run
// as an unprivileged user.
func sharedDir(t testing.TB) string {
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

// next returns the next line, failing the test after the deadline.
func (p *fifo) next(t testing.TB) string {
	t.Helper()
	return p.nextWithin(t, deadline)
}

// nextWithin returns the next line, failing the test after d.
func (p *fifo) nextWithin(t testing.TB, d time.Duration) string {
	t.Helper()
	line, err := p.tryNext(d)
	if err != nil {
		t.Fatalf("reading %s: %v (got %q)", p.path, err, line)
	}
	return line
}

// tryNext returns the next line, or an error after d.
func (p *fifo) tryNext(d time.Duration) (string, error) {
	p.f.SetReadDeadline(time.Now().Add(d))
	line, err := p.r.ReadString('\n')
	return strings.TrimSuffix(line, "\n"), err
}

// ready reads the helper's "ready PID" line and returns the pid.
func (p *fifo) ready(t testing.TB) int {
	t.Helper()
	line := p.next(t)
	var pid int
	if _, err := fmt.Sscanf(line, "ready %d", &pid); err != nil {
		t.Fatalf("want a ready line, got %q", line)
	}
	return pid
}

// rest returns every line already in the pipe: call it once the writer is
// known to be gone. (A deadline already past would make Go skip the read, so
// it gets a short one; the data is there or will never come.)
func (p *fifo) rest() []string {
	p.f.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	var out []string
	for {
		line, err := p.r.ReadString('\n')
		if err != nil {
			return out
		}
		out = append(out, strings.TrimSuffix(line, "\n"))
	}
}
