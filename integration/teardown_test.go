package integration

import (
	"fmt"
	"net"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/reaper-init/reaper/integration/itest"
	"github.com/reaper-init/reaper/signals"
)

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
		p := itest.Plant(t, pid1, itest.Tree{Body: `sh -c "$LEAF" &`, Ups: 1})
		p.Release(t)
		p.ExpectClean(t, p.Wait(), 0)
	})
}

func TestTeardownSetsidAndDoubleForkedDaemons(t *testing.T) {
	bothWalks(t, func(t *testing.T, pid1 bool, cgroupFlag string) {
		p := itest.Plant(t, pid1, itest.Tree{Flags: []string{cgroupFlag}, Ups: 3, Exit: 5, Body: `
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
		p := itest.Plant(t, pid1, itest.Tree{Flags: []string{cgroupFlag, "--grace=1s"}, Ups: 2,
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
		p := itest.Plant(t, pid1, itest.Tree{Flags: []string{cgroupFlag}, Body: body, Ups: 500, PidsMax: 1024})
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
		p := itest.Plant(t, pid1, itest.Tree{Flags: []string{cgroupFlag, "--grace=1s"}, Ups: 1, PidsMax: 128,
			Body: `bash -c '` + forker + `' &`})
		p.Release(t)
		p.ExpectClean(t, p.Wait(), 0)
	})
}

func TestTeardownWhenCommandIsKilled(t *testing.T) {
	modes(t, func(t *testing.T, pid1 bool) {
		p := itest.Plant(t, pid1, itest.Tree{Ups: 2, Body: `sh -c "$LEAF" &
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
				p := itest.Plant(t, pid1, itest.Tree{Flags: append([]string{cgroupFlag}, sc.flags...), Ups: 3, Body: `sh -c "$LEAF" &
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
				p := itest.Plant(t, pid1, itest.Tree{Flags: []string{"-vv", "--forward=" + target}, Ups: 2, Body: `sh -c "$LEAF" &
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
		p := itest.Plant(t, pid1, itest.Tree{Flags: []string{"--timeout=3s"}, Ups: 2, Body: `sh -c "$LEAF" &
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
				addr := itest.FreeAddr(t)
				// leave: a listener reaper left must still hold the port.
				p := itest.Plant(t, pid1, itest.Tree{Flags: []string{"--grace=500ms"}, Ups: 1, Leave: true,
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
		finish := itest.NewFIFO(t, "finish")
		// The descendant outlives COMMAND and reports any SIGTERM it gets.
		body := `H=` + finish.Path + ` sh -c 'trap "echo TERM > \"\$F\"" TERM; echo "up $$" > "$F"; read x < "$H"; echo bye > "$F"' &`
		p := itest.Plant(t, pid1, itest.Tree{Flags: []string{"--wait"}, Ups: 1, Exit: 3, Body: body})
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
		p := itest.Plant(t, pid1, itest.Tree{Flags: []string{"--wait", "--timeout=2s"}, Ups: 1, Body: `setsid sh -c "$LEAF" &`})
		p.Release(t)
		p.ExpectClean(t, p.Wait(), 124)
	})
}

func TestReportMatchesWhatHappened(t *testing.T) {
	modes(t, func(t *testing.T, pid1 bool) {
		p := itest.Plant(t, pid1, itest.Tree{Flags: []string{"--grace=500ms"}, Ups: 3, Exit: 7, Body: `sh -c "$LEAF" &
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
		p := itest.Plant(t, pid1, itest.Tree{Flags: []string{"--stop-signal=USR1", "--grace=30s"}, Ups: 1, Body: body})
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
				p := itest.Plant(t, pid1, itest.Tree{Flags: []string{"--grace=30s"}, Ups: 2, Body: `sh -c "$LEAF" &
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
		p := itest.Plant(t, pid1, itest.Tree{Flags: []string{"--grace=45s"}, Ups: 1, Body: `sh -c "$STUBBORN" &`})
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
		p := itest.Plant(t, pid1, itest.Tree{Flags: []string{"--grace=0", "--cgroup=off"}, Ups: 20, Body: `i=0
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
		p := itest.Plant(t, pid1, itest.Tree{Flags: []string{"--grace=1s"}, Ups: 1, Body: `sh -c "$STUBBORN" &`})
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
		p := itest.Plant(t, pid1, itest.Tree{Flags: []string{"--timeout=2s", "--grace=3s"}, Ups: 1, Exit: 3, Body: `sh -c "$STUBBORN" &`})
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
			p := itest.Plant(t, false, itest.Tree{Flags: flags, Leave: true})
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
				if n, _ := unix.Poll(fds, int(itest.Deadline.Milliseconds())); n != 1 {
					t.Errorf("COMMAND still runs after reaper was SIGKILLed")
				}
			} else if !commandSurvived {
				t.Errorf("with --pdeathsig=none COMMAND died with reaper: survivors %v", r.Survivors)
			}
		})
	}
}

func TestProcOfAnotherNamespace(t *testing.T) {
	itest.RequireRoot(t)
	// A PID namespace without a /proc of its own: reaper (PID 1) must not
	// act on the parent namespace's processes; it warns and falls back to
	// COMMAND's process group.
	s := itest.Start(t, itest.Opts{PID1: true, NoMountProc: true, Args: []string{"-v", "--grace=1s", "sh", "-c", "sleep 300 & exec sleep 300"}})
	s.Stderr.WaitFor(t, regexp.MustCompile(`/proc belongs to another PID namespace`), regexp.MustCompile(`info: started`))
	s.Signal(syscall.SIGTERM)
	if r := s.Wait(); r.Status() != 128+15 || r.Leftovers() != "" {
		t.Errorf("exit %d (want 143), left %s\n%s", r.Status(), r.Leftovers(), r.Stderr)
	}
}

func TestProcOfAnotherNamespaceChildForward(t *testing.T) {
	itest.RequireRoot(t)
	// Blind, with --forward=child: the forwarded SIGTERM reaches COMMAND
	// only, so the rest of COMMAND's group gets the stop signal as well,
	// not just the SIGKILL at the deadline.
	events := itest.NewFIFO(t, "events")
	body := `sh -c 'trap "echo term > \"$F\"; exit 0" TERM; echo up > "$F"; sleep 300 & wait' & exec sleep 300`
	s := itest.Start(t, itest.Opts{PID1: true, NoMountProc: true, Env: []string{"F=" + events.Path},
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

// waitState waits until pid is in state (a letter of /proc/PID/stat). The
// kernel gives no event for a stop of a process that is not one's child.
func waitState(t testing.TB, pid int, state byte) {
	t.Helper()
	end := time.Now().Add(itest.Deadline)
	for itest.ProcState(pid) != state {
		if time.Now().After(end) {
			t.Fatalf("pid %d never reached state %c", pid, state)
		}
		time.Sleep(time.Millisecond)
	}
}
