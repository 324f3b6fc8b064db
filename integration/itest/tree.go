package itest

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/reaper-init/reaper/reaper"
	"golang.org/x/sys/unix"
)

// Leaf processes of the payloads: each announces itself on $F, then
// sleeps. STUBBORN ignores SIGTERM, and so does the sleep it becomes.
const (
	leaf     = `echo "up $$" > "$F"; exec sleep 300`
	stubborn = `trap "" TERM; echo "stubborn $$" > "$F"; exec sleep 300`
)

// Tree is a payload: COMMAND runs body, which starts processes that each
// announce themselves on $F, then waits for the test to write to the gate $G
// and exits with code exit.
type Tree struct {
	Flags   []string
	Body    string
	Ups     int // how many processes body starts that announce themselves
	Exit    int
	PidsMax int
	// Shim, when set, runs the tree under this command line (a peer such
	// as tini) instead of reaper with flags and --report.
	Shim []string
	// Cgroup and Leave are passed on to Start (see Opts).
	Cgroup *Cgroup
	Leave  bool
	// NoReport runs reaper without --report, as the benchmarks do: the
	// report reads every descendant's command line.
	NoReport bool
	Env      []string // added to reaper's environment
	Prefix   []string // passed on to Start (see Opts)
}

// Planted is a running tree.
type Planted struct {
	*Session
	Events   *FIFO
	gate     *FIFO
	Ups      []int // the announced pids, as seen inside reaper's PID namespace
	Stubborn []int // those of them that ignore SIGTERM
	report   string
	Command  int // COMMAND's pid inside reaper's PID namespace
}

// Plant starts reaper around tr and waits until every process announced
// itself.
func Plant(t testing.TB, pid1 bool, tr Tree) *Planted {
	t.Helper()
	p := &Planted{Events: NewFIFO(t, "events"), gate: NewFIFO(t, "gate")}
	p.report = SharedDir(t) + "/report.json"
	script := fmt.Sprintf("echo \"command $$\" > \"$F\"\n%s\nread x < \"$G\"\nexit %d", tr.Body, tr.Exit)
	args := []string{"-v"}
	if !tr.NoReport {
		args = append(args, "--report="+p.report)
	}
	args = append(args, tr.Flags...)
	args = append(args, "sh", "-c", script)
	var command []string
	if tr.Shim != nil {
		command = append(append(append([]string{}, tr.Shim...), "sh", "-c"), script)
	}
	p.Session = Start(t, Opts{PID1: pid1, PidsMax: tr.PidsMax, Args: args, Command: command, Cgroup: tr.Cgroup, Leave: tr.Leave, Prefix: tr.Prefix, Env: append([]string{
		"F=" + p.Events.Path, "G=" + p.gate.Path, "LEAF=" + leaf, "STUBBORN=" + stubborn, "HELPER=" + Bin().Helper,
	}, tr.Env...)})
	for len(p.Ups) < tr.Ups || p.Command == 0 {
		line := p.Events.Next(t)
		kind, pid, _ := strings.Cut(line, " ")
		n, err := strconv.Atoi(pid)
		if err != nil {
			t.Fatalf("payload wrote %q", line)
		}
		switch kind {
		case "command":
			p.Command = n
		case "up", "listening":
			p.Ups = append(p.Ups, n)
		case "stubborn":
			p.Ups = append(p.Ups, n)
			p.Stubborn = append(p.Stubborn, n)
		default:
			t.Fatalf("payload wrote %q", line)
		}
	}
	return p
}

// Release lets COMMAND exit, and returns when, in CLOCK_MONOTONIC
// nanoseconds (the clock of the harness's exit_ns).
func (p *Planted) Release(t testing.TB) int64 {
	t.Helper()
	now := MonotonicNS()
	if _, err := p.gate.File.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	return now
}

// MonotonicNS is the time now, in CLOCK_MONOTONIC nanoseconds: the clock of
// the harness's exit_ns.
func MonotonicNS() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// ReadReport decodes the --report file.
func (p *Planted) ReadReport(t testing.TB) reaper.Report {
	t.Helper()
	data, err := os.ReadFile(p.report)
	if err != nil {
		t.Fatalf("no report: %v", err)
	}
	var r reaper.Report
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatalf("report %s: %v", data, err)
	}
	return r
}

// Outcomes maps each descendant's pid to its outcome in the report.
func Outcomes(r reaper.Report) map[int]string {
	m := map[int]string{}
	if r.Teardown != nil {
		for _, d := range r.Teardown.Descendants {
			m[d.PID] = d.Outcome
		}
	}
	return m
}

// ExpectClean fails the test unless reaper exited with code and left
// nothing behind, and every announced process went after the stop signal
// (outcome "exited"), except the stubborn ones, which were killed.
func (p *Planted) ExpectClean(t testing.TB, r *Result, code int) {
	t.Helper()
	if r.Status() != code {
		t.Errorf("exit %d, want %d\nstderr:\n%s", r.Status(), code, r.Stderr)
	}
	if left := r.Leftovers(); left != "" {
		t.Errorf("reaper left %s\nstderr:\n%s", left, r.Stderr)
	}
	got := Outcomes(p.ReadReport(t))
	for _, pid := range p.Ups {
		want := "exited"
		if slices.Contains(p.Stubborn, pid) {
			want = "killed"
		}
		if got[pid] != want {
			t.Errorf("pid %d: outcome %q in the report, want %q (report: %v)", pid, got[pid], want, got)
		}
	}
}
