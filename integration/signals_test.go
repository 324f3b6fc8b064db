package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/reaper-init/reaper/integration/itest"
	"github.com/reaper-init/reaper/signals"
)

// Faithful signals: only a stop request stops; every other signal is
// forwarded, and nothing more.

// everySignal is every signal from 1 to 31 that a test can send reaper and
// expect COMMAND to record: not SIGKILL and SIGSTOP (uncatchable), SIGCHLD
// (reaper's own), the job-control stops SIGTSTP, SIGTTIN and SIGTTOU (they
// would stop the payload), nor SIGPROF, which the Go runtime's profiler
// consumes in every Go program before any handler sees it (reaper cannot
// forward it, and the Go payload could not record it).
func everySignal() []syscall.Signal {
	var sigs []syscall.Signal
	for sig := syscall.Signal(1); sig <= 31; sig++ {
		switch sig {
		case syscall.SIGKILL, syscall.SIGSTOP, syscall.SIGCHLD, syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGPROF:
			continue
		}
		sigs = append(sigs, sig)
	}
	return sigs
}

// without returns sigs without drop.
func without(sigs []syscall.Signal, drop syscall.Signal) []syscall.Signal {
	var out []syscall.Signal
	for _, sig := range sigs {
		if sig != drop {
			out = append(out, sig)
		}
	}
	return out
}

// sendOneByOne sends each signal to reaper once COMMAND has recorded the one
// before, and returns what COMMAND recorded: one line per signal sent,
// except those dropped (expected to leave no line).
func sendOneByOne(t *testing.T, s *itest.Session, rec *itest.FIFO, send []syscall.Signal, dropped map[syscall.Signal]bool) []string {
	t.Helper()
	var got []string
	for _, sig := range send {
		s.Signal(sig)
		if dropped[sig] {
			continue
		}
		got = append(got, rec.Next(t))
	}
	return got
}

// TestEverySignalReachesCommandInOrder sends every signal, one after
// another, to reaper: each reaches COMMAND, in order, with the signal's
// process group or COMMAND alone as target, from either build of reaper.
// SIGTERM begins a stop, during which forwarding goes on; without SIGTERM
// in the sequence, COMMAND still runs a grace period later. The same with
// rewrites: what reaches COMMAND is rewritten, and whether a signal stops
// is decided by the signal reaper received.
func TestEverySignalReachesCommandInOrder(t *testing.T) {
	rewrites := []string{"--rewrite=TERM:INT", "--rewrite=INT:TERM", "--rewrite=HUP:SYS", "--rewrite=SYS:HUP", "--rewrite=USR2:0"}
	mapped := map[syscall.Signal]syscall.Signal{syscall.SIGTERM: syscall.SIGINT, syscall.SIGINT: syscall.SIGTERM,
		syscall.SIGHUP: syscall.SIGSYS, syscall.SIGSYS: syscall.SIGHUP}
	dropped := map[syscall.Signal]bool{syscall.SIGUSR2: true}
	for _, build := range builds() {
		for _, target := range []string{"group", "child"} {
			for _, rewrite := range []bool{false, true} {
				name := fmt.Sprintf("%s/%s/rewrite=%v", build.name, target, rewrite)
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					modes(t, func(t *testing.T, pid1 bool) {
						flags := []string{"--forward=" + target}
						var want []string
						for _, sig := range everySignal() {
							out := sig
							if rewrite {
								if dropped[sig] {
									continue
								}
								if m, ok := mapped[sig]; ok {
									out = m
								}
							}
							want = append(want, signals.Name(out))
						}
						drop := map[syscall.Signal]bool{}
						if rewrite {
							flags, drop = append(flags, rewrites...), dropped
						}
						everySignalThroughAStop(t, pid1, build.path, flags, drop, want)
						withoutStopRequest(t, pid1, build.path, flags, drop)
					})
				})
			}
		}
	}
}

// everySignalThroughAStop sends every signal; SIGTERM, in its place,
// begins a stop with a long grace period, and forwarding goes on during
// it. A second SIGTERM then ends it with SIGKILL.
func everySignalThroughAStop(t *testing.T, pid1 bool, binary string, flags []string, drop map[syscall.Signal]bool, want []string) {
	rec := itest.NewFIFO(t, "child")
	s := itest.Start(t, itest.Opts{PID1: pid1, Binary: binary, Args: append(append([]string{"-v", "--grace=60s"}, flags...),
		itest.Bin().Helper, "record", "-stay", rec.Path)})
	rec.Ready(t)
	got := sendOneByOne(t, s, rec, everySignal(), drop)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("COMMAND recorded\n%v\nwant\n%v", got, want)
	}
	s.Stderr.WaitFor(t, regexp.MustCompile(`info: stopping reason=signal`))
	s.Signal(syscall.SIGTERM) // a second stop request: SIGKILL at once
	r := s.Wait()
	if status := r.Status(); status != 128+9 || r.Leftovers() != "" {
		t.Errorf("exit %d, left %s; want COMMAND's SIGKILL, nothing left\n%s", status, r.Leftovers(), r.Stderr)
	}
	if n := strings.Count(r.Stderr, "info: stopping"); n != 1 {
		t.Errorf("%d stops began, want the one SIGTERM began\n%s", n, r.Stderr)
	}
}

// withoutStopRequest sends every signal but SIGTERM: none stops, and
// COMMAND still runs a grace period (1 s) later.
func withoutStopRequest(t *testing.T, pid1 bool, binary string, flags []string, drop map[syscall.Signal]bool) {
	rec := itest.NewFIFO(t, "child-no-stop")
	s := itest.Start(t, itest.Opts{PID1: pid1, Binary: binary, Args: append(append([]string{"-v", "--grace=1s"}, flags...),
		itest.Bin().Helper, "record", "-stay", rec.Path)})
	rec.Ready(t)
	sendOneByOne(t, s, rec, without(everySignal(), syscall.SIGTERM), drop)
	time.Sleep(1500 * time.Millisecond) // a grace period and a margin: proving that nothing happens
	if !s.Running() || strings.Contains(s.Stderr.String(), "info: stopping") {
		t.Fatalf("a signal that is no stop request stopped reaper:\n%s", s.Stderr)
	}
	s.Signal(syscall.SIGTERM)
	r := s.Wait()
	if status := r.Status(); status != 128+9 || r.Leftovers() != "" {
		t.Errorf("after SIGTERM: exit %d, left %s; want COMMAND's SIGKILL after the grace period\n%s", status, r.Leftovers(), r.Stderr)
	}
}

// TestHandledSignalsDoNotStop: a COMMAND that handles SIGHUP (a reload),
// SIGINT, SIGQUIT (a JVM's thread dump), SIGUSR1, SIGUSR2 or SIGWINCH and
// keeps running is still running a grace period and a margin later, and
// stops normally on SIGTERM.
func TestHandledSignalsDoNotStop(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH} {
		name := strings.TrimPrefix(signals.Name(sig), "SIG")
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			modes(t, func(t *testing.T, pid1 bool) {
				events := itest.NewFIFO(t, "events")
				script := fmt.Sprintf(`trap 'echo "handled %[1]s" > "$F"' %[1]s
echo "command $$" > "$F"
while :; do sleep 300 & wait $!; done`, name)
				s := itest.Start(t, itest.Opts{PID1: pid1, Env: []string{"F=" + events.Path},
					Args: []string{"-v", "--grace=1s", "sh", "-c", script}})
				if line := events.Next(t); !strings.HasPrefix(line, "command ") {
					t.Fatalf("payload wrote %q", line)
				}
				s.Signal(sig)
				if line := events.Next(t); line != "handled "+name {
					t.Fatalf("payload wrote %q", line)
				}
				time.Sleep(1500 * time.Millisecond) // a grace period and a margin: proving that nothing happens
				if !s.Running() || strings.Contains(s.Stderr.String(), "info: stopping") {
					t.Fatalf("%s stopped reaper:\n%s", name, s.Stderr)
				}
				s.Signal(syscall.SIGTERM)
				r := s.Wait()
				if status := r.Status(); status != 128+15 || r.Leftovers() != "" {
					t.Errorf("after SIGTERM: exit %d, left %s; want 143 (sh killed by SIGTERM)\n%s", status, r.Leftovers(), r.Stderr)
				}
			})
		})
	}
}

// TestStopOn: with --stop-on=TERM,INT, SIGINT begins a stop: a COMMAND that
// ignores SIGINT and SIGTERM is SIGKILLed once the grace period is over.
// SIGTERM, with the default, stays a stop request; SIGINT, with it, is not.
func TestStopOn(t *testing.T) {
	const ignoring = `trap '' INT TERM QUIT; echo "command $$" > "$F"; exec sleep 300`
	for _, tc := range []struct {
		name  string
		flags []string
		env   []string
		sig   syscall.Signal
		stops bool
		// intIgnored: the caller leaves SIGINT ignored, as a shell does for
		// a background job; --stop-on=INT still makes it a stop request.
		intIgnored bool
	}{
		{"flag-INT", []string{"--stop-on=TERM,INT"}, nil, syscall.SIGINT, true, false},
		{"variable-INT", nil, []string{"REAPER_STOP_ON=TERM,INT"}, syscall.SIGINT, true, false},
		{"flag-INT-inherited-ignored", []string{"--stop-on=TERM,INT"}, nil, syscall.SIGINT, true, true},
		{"flag-TERM", []string{"--stop-on=TERM,INT"}, nil, syscall.SIGTERM, true, false},
		{"default-TERM", nil, nil, syscall.SIGTERM, true, false},
		{"default-INT", nil, nil, syscall.SIGINT, false, false},
		{"stop-signal-QUIT", []string{"--stop-signal=QUIT"}, nil, syscall.SIGQUIT, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			events := itest.NewFIFO(t, "events")
			o := itest.Opts{Env: append([]string{"F=" + events.Path}, tc.env...),
				Args: append(append([]string{"-v", "--grace=1s"}, tc.flags...), "sh", "-c", ignoring)}
			if tc.intIgnored { // the shell becomes reaper: same pid
				o.Command = append([]string{"sh", "-c", `trap '' INT; exec "$0" "$@"`, itest.Bin().Reaper}, o.Args...)
			}
			s := itest.Start(t, o)
			events.Next(t)
			s.Signal(tc.sig)
			if !tc.stops {
				time.Sleep(1500 * time.Millisecond) // a grace period and a margin: proving that nothing happens
				if !s.Running() {
					t.Fatalf("%s stopped reaper:\n%s", signals.Name(tc.sig), s.Stderr)
				}
				s.Signal(syscall.SIGTERM)
			}
			r := s.Wait()
			if status := r.Status(); status != 128+9 || r.Leftovers() != "" {
				t.Errorf("exit %d, left %s; want COMMAND SIGKILLed after the grace period\n%s", status, r.Leftovers(), r.Stderr)
			}
			want := signals.Name(tc.sig)
			if !tc.stops {
				want = "SIGTERM"
			}
			if !strings.Contains(r.Stderr, "info: stopping reason=signal") || !strings.Contains(r.Stderr, "warning: killed") {
				t.Errorf("no stop on %s, or no SIGKILL:\n%s", want, r.Stderr)
			}
		})
	}
	// --stop-on takes only signals reaper can receive as one.
	for _, bad := range []string{"--stop-on=KILL", "--stop-on=CHLD", "--stop-on=PROF", "--stop-on=BOGUS"} {
		if code, _, stderr := itest.RunReaper(t, nil, bad, "true"); code != 2 || strings.Count(stderr, "\n") != 1 {
			t.Errorf("%s: exit %d, %q; want 2 and one line", bad, code, stderr)
		}
	}
}

// build is one way of building reaper: the documented one, and a plain
// `go build` with no flags, which must behave the same.
type build struct {
	name, path string
}

func builds() []build {
	return []build{{"documented", itest.Bin().Reaper}, {"plain", itest.Bin().Plain}}
}

// TestEveryBuildIsNamedReaper runs each build as PID 1 of a PID namespace:
// /proc/1/comm is reaper for both (the plain build re-executes itself at
// start-up and must not show as "exe"), and so is every thread's.
func TestEveryBuildIsNamedReaper(t *testing.T) {
	for _, b := range builds() {
		t.Run(b.name, func(t *testing.T) {
			events := itest.NewFIFO(t, "events")
			s := itest.Start(t, itest.Opts{PID1: true, Binary: b.path, Env: []string{"F=" + events.Path},
				Args: []string{"sh", "-c", `echo "command $$" > "$F"; exec sleep 300`}})
			events.Next(t)
			reaper := s.ReaperPID()
			if comm := readTrimmed(fmt.Sprintf("/proc/%d/comm", reaper)); comm != "reaper" {
				t.Errorf("/proc/1/comm of the namespace is %q, want reaper", comm)
			}
			tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", reaper))
			for _, task := range tasks {
				if comm := readTrimmed(fmt.Sprintf("/proc/%d/task/%s/comm", reaper, task.Name())); comm != "reaper" {
					t.Errorf("thread %s is named %q, want reaper", task.Name(), comm)
				}
			}
			cmdline := readTrimmed(fmt.Sprintf("/proc/%d/cmdline", reaper))
			if !strings.HasPrefix(cmdline, b.path+"\x00sh\x00") {
				t.Errorf("reaper's command line is %q, want the one it was started with", cmdline)
			}
			s.Signal(syscall.SIGTERM)
			if r := s.Wait(); r.Status() != 128+15 {
				t.Errorf("exit %d, want 143\n%s", r.Status(), r.Stderr)
			}
		})
	}
}

func readTrimmed(path string) string {
	data, _ := os.ReadFile(path)
	return strings.TrimRight(string(data), "\n\x00")
}

// TestReaperLeavesTheCallersDirectory: COMMAND starts in the caller's
// directory, and reaper itself moves to /, so that it keeps no mount busy.
func TestReaperLeavesTheCallersDirectory(t *testing.T) {
	dir := t.TempDir()
	events := itest.NewFIFO(t, "events")
	s := itest.Start(t, itest.Opts{Dir: dir, Env: []string{"F=" + events.Path},
		Args: []string{"--report=report.json", "sh", "-c", `echo "command $$" > "$F"; exec sleep 300`}})
	var command int
	fmt.Sscanf(events.Next(t), "command %d", &command)
	if cwd, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", s.ReaperPID())); cwd != "/" {
		t.Errorf("reaper's directory is %q, want /", cwd)
	}
	if cwd, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", command)); cwd != dir {
		t.Errorf("COMMAND's directory is %q, want the caller's %s", cwd, dir)
	}
	s.Signal(syscall.SIGTERM)
	s.Wait()
	if _, err := os.Stat(dir + "/report.json"); err != nil {
		t.Errorf("the report named relative to the caller's directory: %v", err)
	}
}

// TestForgedSavedStateKeepsPreemptionOff: a caller that sets the plain
// build's saved state to its own pid (which reaper keeps after an exec)
// cannot make it skip the re-execution that turns async preemption off:
// reaper's own environment then holds GODEBUG=asyncpreemptoff=1.
func TestForgedSavedStateKeepsPreemptionOff(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), itest.Deadline)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c",
		`REAPER_SAVED_GODEBUG="$$:\"reaper\":unset" exec "$PLAIN" -- sh -c 'tr "\0" "\n" < /proc/$PPID/environ'`)
	cmd.Env = append(os.Environ(), "PLAIN="+itest.Bin().Plain)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if !slices.Contains(strings.Split(string(out), "\n"), "GODEBUG=asyncpreemptoff=1") {
		t.Errorf("reaper's environment, with a forged saved state:\n%s\nwant GODEBUG=asyncpreemptoff=1 (re-executed)", out)
	}
}
