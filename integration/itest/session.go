package itest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
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
	Binary  string   // reaper binary to run (default Bin().Reaper)
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
	// Stderr is reaper's stderr, line by line. It goes on after reaper
	// and the harness have exited, for as long as something reaper left
	// (its guardian) writes there: the stream ends once every holder of
	// the pipe but the test has closed it and the test has ended.
	Stderr *Lines
	// stderrW is the test's own write end of the stderr pipe: Wait writes
	// stderrMark there once the harness has exited, and whatever reaper
	// wrote before is read when the mark is (stderrSynced).
	stderrW      *os.File
	stderrSynced chan struct{}
	Cgroup       *Cgroup
	Child        int // the harness's child: reaper, or unshare with pid1
	pid1         bool
	result       *Result
	Ended        chan struct{}
	argv         []string // what the harness runs
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
	// Not StderrPipe: Wait would close its read end once the harness
	// exits, and lose what reaper's guardian writes after.
	stderr, stderrW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	s.cmd.Stderr, s.stderrW, s.stderrSynced = stderrW, stderrW, make(chan struct{})
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	go func() {
		defer stderr.Close()
		s.Stderr.collect(stderr, stderrMark, s.stderrSynced)
	}()
	s.report = bufio.NewReader(pr)
	line, err := s.report.ReadString('\n')
	if _, scanErr := fmt.Sscanf(line, "pid %d", &s.Child); err != nil || scanErr != nil {
		s.cmd.Wait()
		s.stderrW.Close()
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
	// The mark comes after every line reaper wrote (the pipe keeps the
	// order of writes): once it is read, they are all in.
	s.stderrW.WriteString(stderrMark + "\n")
	<-s.stderrSynced
	var r Result
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		r.Code = -1
		r.Stderr = fmt.Sprintf("harness gave no result (%v): %q\n", err, line)
	}
	r.Stderr += s.Stderr.String()
	s.result = &r
}

// stderrMark is the line the test writes into reaper's stderr pipe after
// the harness's exit.
const stderrMark = "\x00itest: the harness has exited\x00"

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

// cleanup kills what is left if the test ended early, and closes the
// test's end of the stderr pipe.
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
	s.stderrW.Close()
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

// Running reports whether the session's reaper is still running.
func (s *Session) Running() bool {
	select {
	case <-s.Ended:
		return false
	default:
		return true
	}
}

// HostPIDAnywhere finds the test's pid of a process seen inside reaper's
// PID namespace, anywhere below reaper.
func (s *Session) HostPIDAnywhere(t testing.TB, nsPID int) int {
	t.Helper()
	if !s.pid1 {
		return nsPID
	}
	host := FirstBelow(s.ReaperPID(), func(pid int) bool {
		ns, _ := InnermostPID(pid)
		return ns == nsPID
	})
	if host != 0 {
		return host
	}
	t.Fatalf("no process below reaper has pid %d in its namespace", nsPID)
	return 0
}
