package integration

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/reaper-init/reaper/reaper"
	"github.com/reaper-init/reaper/signals"
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
	// Cgroup and leave are passed on to start (see opts).
	Cgroup *Cgroup
	Leave  bool
	// NoReport runs reaper without --report, as the benchmarks do: the
	// report reads every descendant's command line.
	NoReport bool
	Env      []string // added to reaper's environment
	Prefix   []string // passed on to start (see opts)
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

// bothWalks runs f with reaper finding descendants through its cgroup
// (--cgroup=on) and through /proc (--cgroup=off), each as a subreaper and
// as PID 1.
func bothWalks(t *testing.T, f func(t *testing.T, pid1 bool, cgroupFlag string)) {
	for _, mode := range []string{"on", "off"} {
		t.Run("cgroup="+mode, func(t *testing.T) {
			t.Parallel()
			modes(t, func(t *testing.T, pid1 bool) { f(t, pid1, "--cgroup="+mode) })
		})
	}
}

func TestTeardownBackgroundChildInGroup(t *testing.T) {
	modes(t, func(t *testing.T, pid1 bool) {
		p := Plant(t, pid1, Tree{Body: `sh -c "$LEAF" &`, Ups: 1})
		p.Release(t)
		p.ExpectClean(t, p.Wait(), 0)
	})
}

func TestTeardownSetsidAndDoubleForkedDaemons(t *testing.T) {
	bothWalks(t, func(t *testing.T, pid1 bool, cgroupFlag string) {
		p := Plant(t, pid1, Tree{Flags: []string{cgroupFlag}, Ups: 3, Exit: 5, Body: `
setsid sh -c 'sh -c "$LEAF" & exit 0' &
(sh -c "$LEAF" &)
setsid sh -c "$LEAF" &`})
		p.Release(t)
		p.ExpectClean(t, p.Wait(), 5)
	})
}

func TestTeardownKillsWhatIgnoresSIGTERMAfterGrace(t *testing.T) {
	const grace = time.Second
	bothWalks(t, func(t *testing.T, pid1 bool, cgroupFlag string) {
		p := Plant(t, pid1, Tree{Flags: []string{cgroupFlag, "--grace=1s"}, Ups: 2,
			Body: `sh -c "$STUBBORN" &
sh -c "$LEAF" &`})
		released := time.Now()
		p.Release(t)
		r := p.Wait()
		elapsed := time.Since(released)
		stubbornPID := p.Stubborn[0]
		p.ExpectClean(t, r, 0)
		// The one deadline: the grace period, once, whatever the number of
		// processes; generous bounds, this machine is shared.
		if elapsed < grace || elapsed >= 2*grace {
			t.Errorf("reaper exited %v after COMMAND, want between %v and %v", elapsed, grace, 2*grace)
		}
		if rep := p.ReadReport(t); rep.Teardown == nil || rep.Teardown.TotalMS < 1000 || rep.Teardown.TotalMS >= 2000 {
			t.Errorf("report: teardown %+v, want total_ms in [1000, 2000)", rep.Teardown)
		}
		if !regexp.MustCompile(fmt.Sprintf(`reaper: warning: killed pid=%d command="sleep 300"`, stubbornPID)).MatchString(r.Stderr) {
			t.Errorf("no warning naming the killed process in:\n%s", r.Stderr)
		}
	})
}

func TestTeardownLargeMixedTree(t *testing.T) {
	// 125 rounds of four leaves: in a new session, in its child, double
	// forked below it, and in a nested new session: 500 processes.
	body := `i=0
while [ $i -lt 125 ]; do
  setsid sh -c 'sh -c "$LEAF" & (sh -c "$LEAF" &); setsid sh -c "$LEAF" & exec sh -c "$LEAF"' &
  i=$((i+1))
done`
	bothWalks(t, func(t *testing.T, pid1 bool, cgroupFlag string) {
		p := Plant(t, pid1, Tree{Flags: []string{cgroupFlag}, Body: body, Ups: 500, PidsMax: 1024})
		p.Release(t)
		p.ExpectClean(t, p.Wait(), 0)
		if n := len(p.ReadReport(t).Teardown.Descendants); n != 500 {
			t.Errorf("the report lists %d descendants, want 500", n)
		}
	})
}

func TestTeardownCatchesForksDuringTeardown(t *testing.T) {
	// The forker ignores SIGTERM and forks as fast as it can until
	// pids.max stops it (bash, unlike dash, survives a failed fork and keeps
	// trying); reaper, in the same pids cgroup, must still end with an
	// empty tree.
	forker := `trap "" TERM; echo "stubborn $$" > "$F"; while :; do sleep 300 & done 2>/dev/null`
	bothWalks(t, func(t *testing.T, pid1 bool, cgroupFlag string) {
		p := Plant(t, pid1, Tree{Flags: []string{cgroupFlag, "--grace=1s"}, Ups: 1, PidsMax: 128,
			Body: `bash -c '` + forker + `' &`})
		p.Release(t)
		p.ExpectClean(t, p.Wait(), 0)
	})
}

func TestTeardownWhenCommandIsKilled(t *testing.T) {
	modes(t, func(t *testing.T, pid1 bool) {
		p := Plant(t, pid1, Tree{Ups: 2, Body: `sh -c "$LEAF" &
setsid sh -c "$LEAF" &`})
		if err := syscall.Kill(p.HostPIDAnywhere(t, p.Command), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		p.ExpectClean(t, p.Wait(), 128+9)
	})
}

func TestTeardownOnStopSignalToReaper(t *testing.T) {
	// The stop request reaches COMMAND's group forwarded; the setsid leaf
	// gets the stop signal of the teardown (SIGTERM), and the summary names
	// both. (SIGHUP is a stop request only with --stop-on.)
	for _, sc := range []struct {
		sig   syscall.Signal
		sent  string
		flags []string
	}{{syscall.SIGTERM, "SIGTERM", nil}, {syscall.SIGHUP, "SIGHUP or SIGTERM", []string{"--stop-on=HUP"}}} {
		t.Run(signals.Name(sc.sig), func(t *testing.T) {
			bothWalks(t, func(t *testing.T, pid1 bool, cgroupFlag string) {
				p := Plant(t, pid1, Tree{Flags: append([]string{cgroupFlag}, sc.flags...), Ups: 3, Body: `sh -c "$LEAF" &
setsid sh -c "$LEAF" &
(sh -c "$LEAF" &)`})
				p.Signal(sc.sig)
				r := p.Wait()
				p.ExpectClean(t, r, 128+int(sc.sig))
				rep := p.ReadReport(t)
				if rep.Teardown == nil || rep.Teardown.Reason != "signal" || rep.Teardown.Received != signals.Name(sc.sig) {
					t.Errorf("report: %+v, want a stop begun by %v", rep.Teardown, signals.Name(sc.sig))
				}
				if !regexp.MustCompile(`teardown: \d+ descendants, \d+ exited after ` + sc.sent + `, 0 killed`).MatchString(r.Stderr) {
					t.Errorf("want a summary naming %s:\n%s", sc.sent, r.Stderr)
				}
			})
		})
	}
}

func TestStopSignalReachesCommandFirst(t *testing.T) {
	// A stop begun by a signal forwards it to COMMAND before anything else
	// is signalled: a COMMAND that waits for its children (a shell with a
	// trap, say) must not see them die of SIGTERM before it gets its own.
	// reaper's debug lines come in the order of its kill(2)s.
	for _, target := range []string{"child", "group"} {
		t.Run(target, func(t *testing.T) {
			modes(t, func(t *testing.T, pid1 bool) {
				p := Plant(t, pid1, Tree{Flags: []string{"-vv", "--forward=" + target}, Ups: 2, Body: `sh -c "$LEAF" &
setsid sh -c "$LEAF" &`})
				p.Signal(syscall.SIGTERM)
				r := p.Wait()
				p.ExpectClean(t, r, 128+15)
				forwarded := strings.Index(r.Stderr, "reaper: debug: forwarded received=SIGTERM")
				signalled := strings.Index(r.Stderr, "reaper: debug: signalled")
				if forwarded < 0 || signalled < 0 || signalled < forwarded {
					t.Errorf("want the forwarded SIGTERM first, then the others signalled:\n%s", r.Stderr)
				}
			})
		})
	}
}

func TestTeardownOnTimeout(t *testing.T) {
	modes(t, func(t *testing.T, pid1 bool) {
		p := Plant(t, pid1, Tree{Flags: []string{"--timeout=3s"}, Ups: 2, Body: `sh -c "$LEAF" &
setsid sh -c "$LEAF" &`})
		r := p.Wait() // COMMAND waits at its gate for ever
		p.ExpectClean(t, r, 124)
		if rep := p.ReadReport(t); !rep.TimedOut || rep.ExitCode != 124 {
			t.Errorf("report: timed_out %v, exit_code %d; want true, 124", rep.TimedOut, rep.ExitCode)
		}
	})
}

func TestTeardownFreesTheListenersPort(t *testing.T) {
	for _, flag := range []string{"", "-ignore-term"} {
		t.Run("listener"+flag, func(t *testing.T) {
			modes(t, func(t *testing.T, pid1 bool) {
				addr := FreeAddr(t)
				// leave: a listener reaper left must still hold the port.
				p := Plant(t, pid1, Tree{Flags: []string{"--grace=500ms"}, Ups: 1, Leave: true,
					Body: fmt.Sprintf(`setsid "$HELPER" listen %s %s "$F" &`, flag, addr)})
				if l, err := net.Listen("tcp", addr); err == nil {
					l.Close()
					t.Fatalf("%s is free while the listener runs: the test proves nothing", addr)
				}
				p.Release(t)
				r := p.Wait()
				l, err := net.Listen("tcp", addr)
				if err != nil {
					t.Fatalf("right after reaper exited, %s cannot be bound: %v", addr, err)
				}
				l.Close()
				if r.Status() != 0 || r.Leftovers() != "" {
					t.Errorf("exit %d, left %s", r.Status(), r.Leftovers())
				}
			})
		})
	}
}

func TestWaitLetsDescendantsFinish(t *testing.T) {
	modes(t, func(t *testing.T, pid1 bool) {
		finish := NewFIFO(t, "finish")
		// The descendant outlives COMMAND and reports any SIGTERM it gets.
		body := `H=` + finish.Path + ` sh -c 'trap "echo TERM > \"\$F\"" TERM; echo "up $$" > "$F"; read x < "$H"; echo bye > "$F"' &`
		p := Plant(t, pid1, Tree{Flags: []string{"--wait"}, Ups: 1, Exit: 3, Body: body})
		p.Release(t)
		p.Stderr.WaitFor(t, regexp.MustCompile(`reaper: info: command exited`))
		select {
		case <-p.Ended:
			t.Fatal("reaper exited while a descendant still ran, with --wait")
		default:
		}
		finish.File.Write([]byte("go\n"))
		r := p.Wait()
		if got := append([]string{p.Events.Next(t)}, p.Events.Rest()...); fmt.Sprint(got) != "[bye]" {
			t.Errorf("the descendant wrote %v, want [bye]: --wait must not signal it", got)
		}
		if r.Status() != 3 || r.Leftovers() != "" {
			t.Errorf("exit %d (want 3), left %s", r.Status(), r.Leftovers())
		}
	})
}

func TestWaitIsBoundedByTimeout(t *testing.T) {
	modes(t, func(t *testing.T, pid1 bool) {
		p := Plant(t, pid1, Tree{Flags: []string{"--wait", "--timeout=2s"}, Ups: 1, Body: `setsid sh -c "$LEAF" &`})
		p.Release(t)
		p.ExpectClean(t, p.Wait(), 124)
	})
}

func TestReportMatchesWhatHappened(t *testing.T) {
	modes(t, func(t *testing.T, pid1 bool) {
		p := Plant(t, pid1, Tree{Flags: []string{"--grace=500ms"}, Ups: 3, Exit: 7, Body: `sh -c "$LEAF" &
setsid sh -c "$STUBBORN" &
(sh -c "$LEAF" &)`})
		p.Release(t)
		r := p.Wait()
		p.ExpectClean(t, r, 7)
		rep := p.ReadReport(t)
		if rep.ExitCode != 7 || rep.CommandStatus == nil || !rep.CommandStatus.Exited || rep.CommandStatus.Code != 7 {
			t.Errorf("report: exit_code %d, command_status %+v; want 7 and exited 7", rep.ExitCode, rep.CommandStatus)
		}
		td := rep.Teardown
		if td == nil {
			t.Fatal("report has no teardown")
		}
		var pids []int
		for _, d := range td.Descendants {
			pids = append(pids, d.PID)
			if d.Signal != "SIGTERM" || d.Command == "" {
				t.Errorf("descendant %+v: want signal SIGTERM and a command line", d)
			}
			if d.Outcome == "killed" && *d.GoneMS < 500 {
				t.Errorf("descendant %+v was killed before the grace period ended", d)
			}
		}
		sort.Ints(pids)
		want := append([]int(nil), p.Ups...)
		sort.Ints(want)
		if fmt.Sprint(pids) != fmt.Sprint(want) || td.Exited != 2 || td.Killed != 1 ||
			td.Reason != "command exited" || td.StopSignal != "SIGTERM" || td.GraceMS != 500 {
			t.Errorf("report teardown %+v, want descendants %v, 2 exited, 1 killed", td, want)
		}
	})
}

func TestStopSignalFlag(t *testing.T) {
	modes(t, func(t *testing.T, pid1 bool) {
		// The leaf ignores SIGTERM and leaves on SIGUSR1, writing it down.
		body := `sh -c 'trap "" TERM; trap "echo usr1 \$\$ > \"\$F\"; exit 0" USR1; echo "up $$" > "$F"; while :; do sleep 1; done' &`
		p := Plant(t, pid1, Tree{Flags: []string{"--stop-signal=USR1", "--grace=30s"}, Ups: 1, Body: body})
		p.Release(t)
		r := p.Wait()
		if got := p.Events.Next(t); got != fmt.Sprintf("usr1 %d", p.Ups[0]) {
			t.Errorf("the leaf wrote %q, want it to have got SIGUSR1", got)
		}
		p.ExpectClean(t, r, 0)
	})
}

func TestStoppedProcessesGetSIGCONT(t *testing.T) {
	for _, trigger := range []string{"command exits", "SIGTERM to reaper"} {
		t.Run(trigger, func(t *testing.T) {
			modes(t, func(t *testing.T, pid1 bool) {
				// One stopped process in COMMAND's group, one in a session of
				// its own; without SIGCONT neither acts on SIGTERM and both
				// would be killed at the deadline.
				p := Plant(t, pid1, Tree{Flags: []string{"--grace=30s"}, Ups: 2, Body: `sh -c "$LEAF" &
setsid sh -c "$LEAF" &`})
				for _, pid := range p.Ups {
					host := p.HostPIDAnywhere(t, pid)
					if err := syscall.Kill(host, syscall.SIGSTOP); err != nil {
						t.Fatal(err)
					}
					waitState(t, host, 'T')
				}
				if trigger == "command exits" {
					p.Release(t)
				} else {
					p.Signal(syscall.SIGTERM)
				}
				r := p.Wait()
				code := 0
				if trigger != "command exits" {
					code = 128 + 15
				}
				p.ExpectClean(t, r, code)
			})
		})
	}
}

func TestSecondStopSignalKillsAtOnce(t *testing.T) {
	modes(t, func(t *testing.T, pid1 bool) {
		p := Plant(t, pid1, Tree{Flags: []string{"--grace=45s"}, Ups: 1, Body: `sh -c "$STUBBORN" &`})
		p.Signal(syscall.SIGTERM)
		p.Stderr.WaitFor(t, regexp.MustCompile(`reaper: info: stopping reason=signal`))
		p.Signal(syscall.SIGTERM)
		r := p.Wait() // with the 45 s grace honoured, the test's deadline fails first
		p.ExpectClean(t, r, 128+15)
		for _, d := range p.ReadReport(t).Teardown.Descendants {
			if d.Outcome == "killed" && *d.GoneMS >= 45000 {
				t.Errorf("%+v was killed at the deadline, not at the second stop signal", d)
			}
		}
	})
}

func TestGraceZero(t *testing.T) {
	// --grace=0 kills at once, right after the stop signal: the 20
	// processes that ignore SIGTERM are SIGKILLed long before the default
	// grace (5 s) could end, nothing is left, and each is named by its
	// command line.
	modes(t, func(t *testing.T, pid1 bool) {
		p := Plant(t, pid1, Tree{Flags: []string{"--grace=0", "--cgroup=off"}, Ups: 20, Body: `i=0
while [ $i -lt 20 ]; do sh -c "$STUBBORN" & i=$((i+1)); done`})
		p.Release(t)
		r := p.Wait()
		p.ExpectClean(t, r, 0) // the stubborn ones' outcome: killed
		if n := strings.Count(r.Stderr, `warning: killed pid=`); n != 20 {
			t.Errorf("%d processes killed, want 20:\n%s", n, r.Stderr)
		}
		// Each is named by the command line it had when it was seen: its
		// readiness line comes before its exec of sleep.
		named := regexp.MustCompile(`warning: killed pid=\d+ command="(sleep 300|sh -c trap \\"\\" TERM; )`)
		if n := len(named.FindAllString(r.Stderr, -1)); n != 20 {
			t.Errorf("%d killed processes named by their command line, want 20:\n%s", n, r.Stderr)
		}
		for _, d := range p.ReadReport(t).Teardown.Descendants {
			if d.Outcome == "killed" && *d.GoneMS >= 5000 {
				t.Errorf("%+v was killed after a grace period", d)
			}
		}
	})
}

func TestOneStopSignalDuringAStopKeepsTheGrace(t *testing.T) {
	// COMMAND exits: the stop begins without a signal. A single SIGTERM from
	// outside (docker stop) must not cut the grace period short.
	modes(t, func(t *testing.T, pid1 bool) {
		p := Plant(t, pid1, Tree{Flags: []string{"--grace=1s"}, Ups: 1, Body: `sh -c "$STUBBORN" &`})
		p.Release(t)
		p.Stderr.WaitFor(t, regexp.MustCompile(`reaper: info: stopping reason="command exited"`))
		p.Signal(syscall.SIGTERM)
		r := p.Wait()
		p.ExpectClean(t, r, 0)
		for _, d := range p.ReadReport(t).Teardown.Descendants {
			if d.Outcome == "killed" && *d.GoneMS < 1000 {
				t.Errorf("%+v was killed before the grace period ended", d)
			}
		}
	})
}

func TestTimeoutDuringAStopKeepsTheStatus(t *testing.T) {
	modes(t, func(t *testing.T, pid1 bool) {
		p := Plant(t, pid1, Tree{Flags: []string{"--timeout=2s", "--grace=3s"}, Ups: 1, Exit: 3, Body: `sh -c "$STUBBORN" &`})
		p.Release(t)
		r := p.Wait()
		p.ExpectClean(t, r, 3) // COMMAND exited 3 before the timeout: not 124
	})
}

func TestParentDeathSignal(t *testing.T) {
	for _, c := range []struct {
		flag string
		dies bool
	}{{"", true}, {"--pdeathsig=none", false}} {
		t.Run("flag="+c.flag, func(t *testing.T) {
			flags := []string{"--guardian=off"} // COMMAND's fate is the parent-death signal's alone
			if c.flag != "" {
				flags = append(flags, c.flag)
			}
			// leave: the harness must not kill what reaper left, or COMMAND
			// would be dead whether the parent-death signal worked or not.
			p := Plant(t, false, Tree{Flags: flags, Leave: true})
			pidfd, err := unix.PidfdOpen(p.Command, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(pidfd)
			p.Signal(syscall.SIGKILL)
			r := p.Wait()
			commandSurvived := false
			for _, sv := range r.Survivors {
				if strings.HasPrefix(sv, strconv.Itoa(p.Command)+" ") {
					commandSurvived = true
				}
			}
			if c.dies {
				// Dead, or about to be: the signal is queued as reaper exits.
				fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
				if n, _ := unix.Poll(fds, int(Deadline.Milliseconds())); n != 1 {
					t.Errorf("COMMAND still runs after reaper was SIGKILLed")
				}
			} else if !commandSurvived {
				t.Errorf("with --pdeathsig=none COMMAND died with reaper: survivors %v", r.Survivors)
			}
		})
	}
}

func TestProcOfAnotherNamespace(t *testing.T) {
	RequireRoot(t)
	// A PID namespace without a /proc of its own: reaper (PID 1) must not
	// act on the parent namespace's processes; it warns and falls back to
	// COMMAND's process group.
	s := Start(t, Opts{PID1: true, NoMountProc: true, Args: []string{"-v", "--grace=1s", "sh", "-c", "sleep 300 & exec sleep 300"}})
	s.Stderr.WaitFor(t, regexp.MustCompile(`/proc belongs to another PID namespace`), regexp.MustCompile(`info: started`))
	s.Signal(syscall.SIGTERM)
	if r := s.Wait(); r.Status() != 128+15 || r.Leftovers() != "" {
		t.Errorf("exit %d (want 143), left %s\n%s", r.Status(), r.Leftovers(), r.Stderr)
	}
}

func TestProcOfAnotherNamespaceChildForward(t *testing.T) {
	RequireRoot(t)
	// Blind, with --forward=child: the forwarded SIGTERM reaches COMMAND
	// only, so the rest of COMMAND's group gets the stop signal as well,
	// not just the SIGKILL at the deadline.
	events := NewFIFO(t, "events")
	body := `sh -c 'trap "echo term > \"$F\"; exit 0" TERM; echo up > "$F"; sleep 300 & wait' & exec sleep 300`
	s := Start(t, Opts{PID1: true, NoMountProc: true, Env: []string{"F=" + events.Path},
		Args: []string{"-v", "--grace=30s", "--forward=child", "sh", "-c", body}})
	if got := events.Next(t); got != "up" {
		t.Fatalf("payload wrote %q", got)
	}
	s.Stderr.WaitFor(t, regexp.MustCompile(`info: started`))
	s.Signal(syscall.SIGTERM)
	if got := events.Next(t); got != "term" {
		t.Errorf("the background shell in COMMAND's group wrote %q, want its SIGTERM", got)
	}
	if r := s.Wait(); r.Status() != 128+15 || r.Leftovers() != "" {
		t.Errorf("exit %d (want 143), left %s\n%s", r.Status(), r.Leftovers(), r.Stderr)
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

// waitState waits until pid is in state (a letter of /proc/PID/stat). The
// kernel gives no event for a stop of a process that is not one's child.
func waitState(t testing.TB, pid int, state byte) {
	t.Helper()
	end := time.Now().Add(Deadline)
	for ProcState(pid) != state {
		if time.Now().After(end) {
			t.Fatalf("pid %d never reached state %c", pid, state)
		}
		time.Sleep(time.Millisecond)
	}
}
