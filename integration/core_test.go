package integration

import (
	"bytes"
	"context"
	"debug/buildinfo"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/reaper-init/reaper/integration/itest"
	"github.com/reaper-init/reaper/signals"
)

// modes runs f once with reaper as an ordinary subreaper and once as PID 1
// of a new PID namespace.
func modes(t *testing.T, f func(t *testing.T, pid1 bool)) {
	t.Run("subreaper", func(t *testing.T) { t.Parallel(); f(t, false) })
	t.Run("pid1", func(t *testing.T) { t.Parallel(); itest.RequireRoot(t); f(t, true) })
}

func TestExitCodes(t *testing.T) {
	notExec := t.TempDir() + "/not-executable"
	os.WriteFile(notExec, []byte("#!/bin/sh\nexit 0\n"), 0o644)
	cases := []struct {
		name string
		args []string
		want int
	}{
		{"exit 0", []string{"sh", "-c", "exit 0"}, 0},
		{"exit 1", []string{"sh", "-c", "exit 1"}, 1},
		{"exit 3", []string{"sh", "-c", "exit 3"}, 3},
		{"exit 255", []string{"sh", "-c", "exit 255"}, 255},
		{"SIGTERM", []string{"sh", "-c", "kill -TERM $$"}, 128 + 15},
		{"SIGKILL", []string{"sh", "-c", "kill -KILL $$"}, 128 + 9},
		{"SIGUSR1", []string{"sh", "-c", "kill -USR1 $$"}, 128 + 10},
		{"SIGHUP", []string{"sh", "-c", "kill -HUP $$"}, 128 + 1},
		{"SIGQUIT", []string{"sh", "-c", "kill -QUIT $$"}, 128 + 3}, // its default dumps core: reaper's death must not
		{"SIGSEGV", []string{"sh", "-c", "kill -SEGV $$"}, 128 + 11},
		{"not found", []string{"reaper-no-such-command"}, 127},
		{"no such path", []string{"/nonexistent/command"}, 127},
		{"not executable", []string{notExec}, 126},
		{"directory", []string{"/"}, 126},
		{"success-exit maps 3", []string{"--success-exit=3", "sh", "-c", "exit 3"}, 0},
		{"success-exit maps 143", []string{"--success-exit", "143", "sh", "-c", "kill -TERM $$"}, 0},
		{"success-exit leaves 4", []string{"--success-exit=3", "sh", "-c", "exit 4"}, 4},
	}
	modes(t, func(t *testing.T, pid1 bool) {
		for _, c := range cases {
			r := itest.Start(t, itest.Opts{Args: c.args, PID1: pid1}).Wait()
			if r.Status() != c.want {
				t.Errorf("%s: exit %d, want %d\nstderr:\n%s", c.name, r.Status(), c.want, r.Stderr)
			}
			// COMMAND died of a signal: so does reaper, without a core
			// dump, unless it is PID 1, which exits 128+N (unshare passes
			// that on); and not when --success-exit maps it.
			signalled := strings.HasPrefix(c.name, "SIG")
			switch {
			case signalled && !pid1 && (r.Signal != c.want-128 || r.Core):
				t.Errorf("%s: reaper ended with code %d, signal %d, core %v; want to die of signal %d, no core", c.name, r.Code, r.Signal, r.Core, c.want-128)
			case (!signalled || pid1) && r.Signal != 0:
				t.Errorf("%s: reaper died of signal %d, want exit %d", c.name, r.Signal, c.want)
			}
			if left := r.Leftovers(); left != "" {
				t.Errorf("%s: left %s", c.name, left)
			}
		}
	})
}

func TestStartErrorsSayWhy(t *testing.T) {
	notExec := t.TempDir() + "/script"
	os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644)
	for _, c := range []struct {
		args []string
		code int
		line string
	}{
		{[]string{"reaper-no-such-command"}, 127, "reaper: reaper-no-such-command: command not found"},
		{[]string{notExec}, 126, "reaper: " + notExec + ": permission denied"},
	} {
		code, stdout, stderr := itest.RunReaper(t, nil, c.args...)
		if code != c.code || strings.TrimSpace(stderr) != c.line || stdout != "" {
			t.Errorf("reaper %v: exit %d, stderr %q, stdout %q; want %d and %q", c.args, code, stderr, stdout, c.code, c.line)
		}
	}
	// A path that exists but cannot be reached (a directory on the way that
	// may not be searched) is 126, as in sh and bash; one that does not
	// exist, 127. Root searches every directory: this runs as nobody.
	nobody := itest.AsNobody(t)
	locked := itest.SharedDir(t) + "/locked"
	if err := os.Mkdir(locked, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(locked+"/true", []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path string
		code int
		line string
	}{
		{locked + "/true", 126, ": permission denied"},
		{locked + "/absent", 126, ": permission denied"}, // nobody cannot tell it is absent: sh says 126 too
		{itest.SharedDir(t) + "/absent/true", 127, ": no such file or directory"},
	} {
		argv := append(append([]string{}, nobody[1:]...), c.path)
		code, _, stderr := itest.RunBinary(t, nobody[0], nil, argv...)
		if code != c.code || !strings.HasSuffix(strings.TrimSpace(stderr), c.line) {
			t.Errorf("reaper %s as nobody: exit %d, %q; want %d and %q", c.path, code, stderr, c.code, c.line)
		}
		shCode, _, _ := itest.RunBinary(t, nobody[0], nil, append(append([]string{}, nobody[1:len(nobody)-1]...), "sh", "-c", c.path)...)
		if shCode != c.code {
			t.Errorf("sh -c %s as nobody exits %d, reaper %d", c.path, shCode, code)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	cases := []struct {
		env  []string
		args []string
		says string
	}{
		{nil, []string{}, "no COMMAND"},
		{nil, []string{"--"}, "no COMMAND"},
		{nil, []string{"--no-such-flag", "true"}, "unknown flag --no-such-flag"},
		{nil, []string{"-x", "true"}, "unknown flag -x"},
		{nil, []string{"-vvv", "true"}, "unknown flag -vvv"},
		{nil, []string{"--verbose=3", "true"}, `"3" is not a verbosity 0, 1 or 2`},
		{nil, []string{"--grace=soon", "true"}, "--grace"},
		{nil, []string{"--grace=-1s", "true"}, "negative"},
		{nil, []string{"--timeout=1y", "true"}, "--timeout"},
		{nil, []string{"--stop-signal=NOPE", "true"}, `unknown signal "NOPE"`},
		{nil, []string{"--rewrite=TERM", "true"}, "FROM:TO"},
		{nil, []string{"--rewrite=TERM:NOPE", "true"}, `unknown signal "NOPE"`},
		{nil, []string{"--rewrite=KILL:TERM", "true"}, "never forwarded"},
		{nil, []string{"--rewrite=HUP:0,HUP:INT", "true"}, "rewrite SIGHUP:SIGINT conflicts with rewrite SIGHUP:0"},
		{nil, []string{"--rewrite=HUP:0", "--rewrite=TERM:QUIT,SIGHUP:INT", "true"}, "rewrite SIGHUP:SIGINT conflicts with rewrite SIGHUP:0"},
		{nil, []string{"--forward=session", "true"}, "--forward"},
		{nil, []string{"--success-exit=256", "true"}, "--success-exit"},
		{nil, []string{"--log-format=xml", "true"}, "--log-format"},
		{nil, []string{"--wait=maybe", "true"}, "--wait"},
		{nil, []string{"--grace"}, "--grace needs a value"},
		{[]string{"REAPER_GRACE=soon"}, []string{"true"}, "REAPER_GRACE"},
		{[]string{"REAPER_FORWARD=session"}, []string{"true"}, "REAPER_FORWARD"},
		{[]string{"REAPER_REWRITE=TERM:QUIT,HUP:NOPE"}, []string{"true"}, "REAPER_REWRITE"},
		{[]string{"REAPER_REWRITE=HUP:0,HUP:INT"}, []string{"true"}, "REAPER_REWRITE"},
		{[]string{"REAPER_REWRITE=HUP:0,hup:int"}, []string{"true"}, "conflicts with rewrite SIGHUP:0"},
		{[]string{"REAPER_VERBOSE=loud"}, []string{"true"}, "REAPER_VERBOSE"},
	}
	for _, c := range cases {
		code, stdout, stderr := itest.RunReaper(t, c.env, c.args...)
		lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
		if code != 2 || len(lines) != 1 || !strings.Contains(stderr, c.says) ||
			!strings.Contains(stderr, "--help") || stdout != "" {
			t.Errorf("reaper %v (env %v): exit %d, stdout %q, stderr %q; want exit 2 and one line saying %q and pointing to --help",
				c.args, c.env, code, stdout, stderr, c.says)
		}
		if strings.Contains(stderr, "goroutine") || strings.Contains(stderr, "panic") {
			t.Errorf("reaper %v: a Go stack trace: %s", c.args, stderr)
		}
	}
}

func TestFlagBeatsEnvironment(t *testing.T) {
	// The variable would make reaper fail; the flag must win over it.
	code, _, stderr := itest.RunReaper(t, []string{"REAPER_FORWARD=session"}, "--forward=child", "true")
	if code != 0 {
		t.Errorf("flag did not win over REAPER_FORWARD: exit %d, %s", code, stderr)
	}
	// The variable alone applies.
	code, _, _ = itest.RunReaper(t, []string{"REAPER_SUCCESS_EXIT=7,9"}, "sh", "-c", "exit 9")
	if code != 0 {
		t.Errorf("REAPER_SUCCESS_EXIT=7,9 did not map 9: exit %d", code)
	}
}

func TestHelpListsEveryFlagVariableAndExitCode(t *testing.T) {
	for _, arg := range []string{"-h", "--help"} {
		code, stdout, stderr := itest.RunReaper(t, nil, arg)
		if code != 0 || stderr != "" {
			t.Fatalf("reaper %s: exit %d, stderr %q", arg, code, stderr)
		}
		// One line per flag, with its variable: a bare substring check
		// would take --wait for --wait-port and -v for --verbose.
		flags := [][2]string{{"--forward", "REAPER_FORWARD"}, {"--rewrite", "REAPER_REWRITE"},
			{"--success-exit", "REAPER_SUCCESS_EXIT"}, {"--stop-signal", "REAPER_STOP_SIGNAL"},
			{"--pdeathsig", "REAPER_PDEATHSIG"}, {"--grace", "REAPER_GRACE"}, {"--timeout", "REAPER_TIMEOUT"},
			{"--wait", "REAPER_WAIT"}, {"--leftovers", "REAPER_LEFTOVERS"}, {"--report", "REAPER_REPORT"}, {"--instance", ""},
			{"--replace", "REAPER_REPLACE"}, {"--cgroup", "REAPER_CGROUP"}, {"--guardian", "REAPER_GUARDIAN"}, {"--wait-port", "REAPER_WAIT_PORT"},
			{"--wait-port-timeout", "REAPER_WAIT_PORT_TIMEOUT"}, {"--log-format", "REAPER_LOG_FORMAT"},
			{"--verbose", "REAPER_VERBOSE"}, {"-v", ""}, {"--version", ""}, {"--help", ""}}
		for _, f := range flags {
			line := `(?m)^\s+` + regexp.QuoteMeta(f[0]) + `(=\S+)?\s+`
			if f[1] != "" {
				line += regexp.QuoteMeta(f[1]) + `\s`
			} else {
				line += `[a-z]` // the description, no variable
			}
			if !regexp.MustCompile(line).MatchString(stdout) {
				t.Errorf("reaper %s has no line for %s %s", arg, f[0], f[1])
			}
		}
		for _, code := range []string{"N", "128+S", "2", "123", "124", "125", "126", "127"} {
			if !regexp.MustCompile(`(?m)^\s+` + regexp.QuoteMeta(code) + `\s+\S`).MatchString(stdout) {
				t.Errorf("reaper %s does not explain exit code %s", arg, code)
			}
		}
	}
	code, stdout, _ := itest.RunReaper(t, nil, "--version")
	if code != 0 || !regexp.MustCompile(`^reaper version \S+ \(commit \S+, linux/\S+\)\n$`).MatchString(stdout) {
		t.Errorf("--version: exit %d, %q", code, stdout)
	}
}

func TestSilentOnSuccess(t *testing.T) {
	var stdout bytes.Buffer
	r := itest.Start(t, itest.Opts{Stdout: &stdout, Args: []string{"sh", "-c", "sleep 60 & setsid sleep 60 & exit 0"}}).Wait()
	if r.Status() != 0 || stdout.String() != "" || r.Stderr != "" || r.Leftovers() != "" {
		t.Errorf("exit %d, stdout %q, stderr %q, left %s; want 0, nothing written, nothing left",
			r.Status(), stdout.String(), r.Stderr, r.Leftovers())
	}
}

func TestVerboseLogging(t *testing.T) {
	_, stdout, stderr := itest.RunReaper(t, nil, "-vv", "sh", "-c", "exit 5")
	if stdout != "" {
		t.Errorf("logs went to stdout: %q", stdout)
	}
	for _, want := range []string{`reaper: info: started pid=\d+`, `reaper: debug: reaped pid=\d+ status="exit 5"`} {
		if !regexp.MustCompile(want).MatchString(stderr) {
			t.Errorf("-vv: no line matching %s in:\n%s", want, stderr)
		}
	}
	_, _, stderr = itest.RunReaper(t, nil, "-v", "--log-format=json", "sh", "-c", "exit 5")
	if !regexp.MustCompile(`(?m)^\{"level":"info",.*"msg":"command exited".*"status":"exit 5"`).MatchString(stderr) {
		t.Errorf("--log-format=json -v: no JSON info line in:\n%s", stderr)
	}
}

// sendAndRecord starts reaper around the recording helper (and a grandchild
// in its process group), sends each signal in turn and waits until the child
// (and, when both should get it, the grandchild) has recorded it, then
// returns what child and grandchild recorded.
func sendAndRecord(t testing.TB, pid1 bool, flags []string, send []syscall.Signal) (child, grandchild []string, r *itest.Result) {
	bothGet := slices.Contains(flags, "--forward=group")
	t.Helper()
	rec, grec := itest.NewFIFO(t, "child"), itest.NewFIFO(t, "grandchild")
	args := append(flags, itest.Bin().Helper, "record", "-child", grec.Path, rec.Path)
	s := itest.Start(t, itest.Opts{Args: args, PID1: pid1})
	rec.Ready(t)
	grec.Ready(t)
	for i, sig := range send {
		s.Signal(sig)
		child = append(child, rec.Next(t))
		if bothGet && i < len(send)-1 {
			grandchild = append(grandchild, grec.Next(t))
		}
	}
	r = s.Wait()
	child = append(child, rec.Rest()...)
	grandchild = append(grandchild, grec.Rest()...)
	return child, grandchild, r
}

func names(sigs []syscall.Signal) []string {
	out := make([]string, len(sigs))
	for i, s := range sigs {
		out[i] = signals.Name(s)
	}
	return out
}

func TestForwardsEverySignalInOrder(t *testing.T) {
	nonStop := []syscall.Signal{syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH, syscall.SIGURG,
		syscall.SIGCONT, signals.RTMin + 1, syscall.SIGALRM, signals.RTMax, syscall.SIGUSR1}
	modes(t, func(t *testing.T, pid1 bool) {
		for _, stop := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT} {
			sent := append(append([]syscall.Signal{}, nonStop...), stop)
			t.Run("group/"+signals.Name(stop), func(t *testing.T) {
				child, grandchild, r := sendAndRecord(t, pid1, []string{"--forward=group"}, sent)
				want := fmt.Sprint(names(sent))
				if fmt.Sprint(child) != want {
					t.Errorf("child recorded %v, want %v", child, want)
				}
				if fmt.Sprint(grandchild) != want {
					t.Errorf("grandchild in the group recorded %v, want %v", grandchild, want)
				}
				if r.Status() != 0 {
					t.Errorf("exit %d, want 0\n%s", r.Status(), r.Stderr)
				}
			})
			// The default and --forward=child: COMMAND alone gets every
			// signal; the grandchild in its group gets only the stop
			// signal of the teardown once COMMAND has exited.
			for _, flags := range [][]string{nil, {"--forward=child"}} {
				name := "default"
				if flags != nil {
					name = "child"
				}
				t.Run(name+"/"+signals.Name(stop), func(t *testing.T) {
					child, grandchild, r := sendAndRecord(t, pid1, flags, sent)
					if fmt.Sprint(child) != fmt.Sprint(names(sent)) {
						t.Errorf("child recorded %v, want %v", child, names(sent))
					}
					if fmt.Sprint(grandchild) != "[SIGTERM]" {
						t.Errorf("grandchild recorded %v, want only SIGTERM", grandchild)
					}
					if r.Status() != 0 {
						t.Errorf("exit %d, want 0\n%s", r.Status(), r.Stderr)
					}
				})
			}
		}
	})
}

func TestSignalsSentAsCommandStartsAreForwarded(t *testing.T) {
	// reaper catches most signals while the rest of its start-up runs, and
	// must have caught every one before COMMAND runs. A COMMAND that at
	// once sends reaper the signals it catches last (signal.Notify enables
	// them in the order of signals.Forwardable) gets each one back. With
	// COMMAND started before they are all caught, about a quarter of such
	// runs lost some here, so each mode runs it ten times.
	var last []string
	for sig := signals.RTMax; sig > signals.RTMax-8; sig-- {
		last = append(last, strconv.Itoa(int(sig)))
	}
	script := `exec 3>>"$F"
for s in $SIGS; do trap "echo $s >&3" $s; done
for s in $SIGS; do kill -$s $PPID; done
while :; do sleep 300 & wait $!; done`
	modes(t, func(t *testing.T, pid1 bool) {
		for round := range 10 {
			rec := itest.NewFIFO(t, fmt.Sprintf("round%d", round))
			s := itest.Start(t, itest.Opts{PID1: pid1, Env: []string{"F=" + rec.Path, "SIGS=" + strings.Join(last, " ")},
				Args: []string{"--forward=child", "sh", "-c", script}})
			var got []string
			for range last {
				// A lost signal shows only as one that never comes: wait
				// less than the full deadline for it.
				line, err := rec.TryNext(10 * time.Second)
				if err != nil {
					break
				}
				got = append(got, line)
			}
			s.Signal(syscall.SIGTERM)
			r := s.Wait()
			slices.Sort(got)
			want := slices.Sorted(slices.Values(last))
			if !slices.Equal(got, want) || r.Status() != 128+15 {
				t.Fatalf("round %d: COMMAND got back %v of %v; exit %d (want 143)\n%s", round, got, want, r.Status(), r.Stderr)
			}
		}
	})
}

func TestRewriteAndDrop(t *testing.T) {
	modes(t, func(t *testing.T, pid1 bool) {
		rec := itest.NewFIFO(t, "child")
		s := itest.Start(t, itest.Opts{PID1: pid1, Args: []string{"--rewrite=USR1:USR2", "--rewrite", "HUP:0",
			"--rewrite=TERM:QUIT", itest.Bin().Helper, "record", rec.Path}})
		rec.Ready(t)
		s.Signal(syscall.SIGUSR1)
		if got := rec.Next(t); got != "SIGUSR2" {
			t.Errorf("USR1 arrived as %s, want SIGUSR2", got)
		}
		s.Signal(syscall.SIGHUP) // dropped: the next line must be WINCH's
		s.Signal(syscall.SIGWINCH)
		if got := rec.Next(t); got != "SIGWINCH" {
			t.Errorf("after a dropped HUP the child recorded %s, want SIGWINCH", got)
		}
		s.Signal(syscall.SIGTERM) // arrives as QUIT, which ends the helper
		r := s.Wait()
		if rest := append([]string{rec.Next(t)}, rec.Rest()...); fmt.Sprint(rest) != "[SIGQUIT]" {
			t.Errorf("TERM arrived as %v, want [SIGQUIT]", rest)
		}
		if r.Status() != 0 {
			t.Errorf("exit %d\n%s", r.Status(), r.Stderr)
		}
	})
}

func TestEveryStopSignalRewritten(t *testing.T) {
	// With TERM, INT, HUP and QUIT all rewritten no stop signal is left to
	// catch apart, and an empty list must not make os/signal relay every
	// signal twice (signal.Notify with no signals means all of them).
	rec := itest.NewFIFO(t, "child")
	s := itest.Start(t, itest.Opts{Args: []string{"-vv", "--rewrite=TERM:QUIT", "--rewrite=INT:QUIT", "--rewrite=HUP:QUIT",
		"--rewrite=QUIT:TERM", itest.Bin().Helper, "record", rec.Path}})
	rec.Ready(t)
	s.Signal(syscall.SIGUSR2)
	if got := rec.Next(t); got != "SIGUSR2" {
		t.Errorf("the child recorded %s, want SIGUSR2", got)
	}
	s.Signal(syscall.SIGTERM) // arrives as QUIT, which ends the helper
	r := s.Wait()
	if r.Status() != 0 {
		t.Errorf("exit %d\n%s", r.Status(), r.Stderr)
	}
	if rest := append([]string{rec.Next(t)}, rec.Rest()...); fmt.Sprint(rest) != "[SIGQUIT]" {
		t.Errorf("after SIGUSR2 the child recorded %v, want [SIGQUIT]", rest)
	}
	for _, sig := range []string{"SIGUSR2", "SIGTERM"} {
		if n := strings.Count(r.Stderr, "forwarded received="+sig); n != 1 {
			t.Errorf("%s forwarded %d times, want once:\n%s", sig, n, r.Stderr)
		}
	}
	if strings.Contains(r.Stderr, "received=SIGCHLD") {
		t.Errorf("SIGCHLD forwarded:\n%s", r.Stderr)
	}
}

func TestRuntimeSIGURGNeverReachesChild(t *testing.T) {
	// The documented build turns async preemption off at link time.
	info, err := buildinfo.ReadFile(itest.Bin().Reaper)
	if err != nil {
		t.Fatal(err)
	}
	if ldflags := itest.SettingOf(info, "-ldflags"); !strings.Contains(ldflags, "asyncpreemptoff=1") {
		t.Errorf("reaper is built with -ldflags %q, without asyncpreemptoff=1", ldflags)
	}
	// A bare "go build" re-executes itself with GODEBUG=asyncpreemptoff=1,
	// and COMMAND still sees the caller's GODEBUG.
	for _, c := range []struct{ callerGodebug, reaperGodebug, commandGodebug string }{
		{"", "GODEBUG=asyncpreemptoff=1", "GODEBUG="},
		{"GODEBUG=madvdontneed=1", "GODEBUG=madvdontneed=1,asyncpreemptoff=1", "GODEBUG=madvdontneed=1"},
	} {
		var env []string
		if c.callerGodebug != "" {
			env = []string{c.callerGodebug}
		}
		script := `tr '\0' '\n' < /proc/$PPID/environ | grep ^GODEBUG=; echo "GODEBUG=$GODEBUG"; env | grep -c ^REAPER_SAVED`
		_, stdout, stderr := itest.RunBinary(t, itest.Bin().Plain, env, "sh", "-c", script) // grep -c exits 1 on 0
		want := c.reaperGodebug + "\n" + c.commandGodebug + "\n0\n"
		if stdout != want {
			t.Errorf("plain build, caller %q: reaper/COMMAND GODEBUG and leftover variables:\n%s\nwant:\n%s\n%s", c.callerGodebug, stdout, want, stderr)
		}
	}
	for _, binary := range []string{itest.Bin().Reaper, itest.Bin().Plain} {
		t.Run(filepath.Base(binary), func(t *testing.T) {
			modes(t, func(t *testing.T, pid1 bool) { busyReaperSendsNoSIGURG(t, pid1, binary) })
		})
	}
}

// busyReaperSendsNoSIGURG keeps reaper busy and checks that no SIGURG of its
// runtime reaches the process group. Once COMMAND has exited (--wait keeps
// reaper there), every forwarded signal walks the tree and signals each of
// 400 group members through a pidfd: work long enough for the runtime to
// preempt reaper's goroutines, which it would do with SIGURG.
func busyReaperSendsNoSIGURG(t testing.TB, pid1 bool, binary string) {
	rec := itest.NewFIFO(t, "child")
	script := `"$HELPER" record "$REC" &
i=0; while [ $i -lt 400 ]; do sleep 300 & i=$((i+1)); done
exit 0`
	s := itest.Start(t, itest.Opts{PID1: pid1, Binary: binary, PidsMax: 600, Args: []string{"-v", "--wait", "--forward=group", "sh", "-c", script},
		Env: []string{"HELPER=" + itest.Bin().Helper, "REC=" + rec.Path}})
	rec.Ready(t)
	s.Stderr.WaitFor(t, regexp.MustCompile(`command exited`))
	for i := 0; i < 100; i++ {
		s.Signal(syscall.SIGUSR1)
		if got := rec.Next(t); got != "SIGUSR1" {
			t.Fatalf("signal %d: the group member recorded %s, want SIGUSR1", i, got)
		}
	}
	s.Signal(syscall.SIGURG)
	if got := rec.Next(t); got != "SIGURG" {
		t.Errorf("SIGURG sent to reaper arrived as %s", got)
	}
	s.Signal(syscall.SIGTERM)
	r := s.Wait()
	if rest := rec.Rest(); fmt.Sprint(rest) != "[SIGTERM]" {
		t.Errorf("after one SIGURG the group member recorded %v, want [SIGTERM]", rest)
	}
	if r.Status() != 0 || r.Leftovers() != "" {
		t.Errorf("exit %d, left %s\n%s", r.Status(), r.Leftovers(), r.Stderr)
	}
}

func TestReapsEveryOrphan(t *testing.T) {
	modes(t, func(t *testing.T, pid1 bool) {
		out := itest.NewFIFO(t, "orphans")
		s := itest.Start(t, itest.Opts{PID1: pid1, PidsMax: 256, Args: []string{"-vv", itest.Bin().Helper, "orphans", "200", out.Path}})
		var patterns []*regexp.Regexp
		for {
			line := out.Next(t)
			if line == "done" {
				break
			}
			var pid int
			fmt.Sscanf(line, "orphan %d", &pid)
			patterns = append(patterns, regexp.MustCompile(fmt.Sprintf(`reaped pid=%d `, pid)))
		}
		if len(patterns) != 200 {
			t.Fatalf("%d orphans reported, want 200", len(patterns))
		}
		s.Stderr.WaitFor(t, patterns...)
		// Every orphan was reaped, so none may be left as a zombie.
		reaper := s.ReaperPID()
		var zombies []int
		for _, kid := range itest.ChildrenOf(reaper) {
			if itest.ProcState(kid) == 'Z' {
				zombies = append(zombies, kid)
			}
		}
		if len(zombies) > 0 {
			t.Errorf("zombies of reaper after every orphan was reaped: %v", zombies)
		}
		s.Signal(syscall.SIGTERM)
		if r := s.Wait(); r.Status() != 0 || r.Leftovers() != "" {
			t.Errorf("exit %d (want 0), left %s", r.Status(), r.Leftovers())
		}
	})
}

func TestChildStartsClean(t *testing.T) {
	modes(t, func(t *testing.T, pid1 bool) {
		var out bytes.Buffer
		r := itest.Start(t, itest.Opts{PID1: pid1, Stdout: &out, Args: []string{itest.Bin().Helper, "fds"}}).Wait()
		if got := strings.TrimSpace(out.String()); got != "0 1 2" || r.Status() != 0 {
			t.Errorf("COMMAND's open descriptors are %q (exit %d), want 0 1 2", got, r.Status())
		}
	})
	// A descriptor reaper's caller passed on purpose passes through, as exec
	// would pass it.
	out, err := exec.Command("sh", "-c", "exec 7</dev/null; exec "+itest.Bin().Reaper+" "+itest.Bin().Helper+" fds").Output()
	if got := strings.Fields(string(out)); err != nil || !slices.Contains(got, "7") {
		t.Errorf("with fd 7 open in the caller COMMAND has %q (%v), want 7 among them", got, err)
	}
	status := func(t *testing.T, shell string) map[string]string {
		t.Helper()
		out, err := exec.Command("sh", "-c", shell).Output()
		if err != nil {
			t.Fatalf("%s: %v", shell, err)
		}
		fields := map[string]string{}
		for _, line := range strings.Split(string(out), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok {
				fields[k] = strings.TrimSpace(v)
			}
		}
		return fields
	}
	st := status(t, itest.Bin().Reaper+" -- cat /proc/self/status")
	if st["SigBlk"] != "0000000000000000" || st["SigIgn"] != "0000000000000000" {
		t.Errorf("COMMAND starts with SigBlk %s SigIgn %s, want both zero", st["SigBlk"], st["SigIgn"])
	}
	// A mask the caller set passes on as it is, SIGPIPE and SIGTTOU too,
	// which reaper blocks on one thread of its own.
	st = status(t, itest.Bin().Helper+" blocked PIPE,TTOU,USR1 "+itest.Bin().Reaper+" -- cat /proc/self/status")
	if st["SigBlk"] != "0000000000201200" {
		t.Errorf("with PIPE, TTOU and USR1 blocked by the caller, COMMAND's SigBlk is %s, want 0000000000201200", st["SigBlk"])
	}
	// A signal the caller ignores (nohup's SIGHUP, a background job's
	// SIGINT) stays ignored, though reaper catches it to forward it.
	st = status(t, "trap '' HUP INT; exec "+itest.Bin().Reaper+" -- cat /proc/self/status")
	if st["SigIgn"] != "0000000000000003" {
		t.Errorf("with SIGHUP and SIGINT ignored by the caller, COMMAND's SigIgn is %s, want 0000000000000003", st["SigIgn"])
	}
	// ... with the caller's mask, through the trampoline that sets them.
	st = status(t, "trap '' INT; exec "+itest.Bin().Helper+" blocked USR1 "+itest.Bin().Reaper+" -- cat /proc/self/status")
	if st["SigIgn"] != "0000000000000002" || st["SigBlk"] != "0000000000000200" {
		t.Errorf("with SIGINT ignored and SIGUSR1 blocked by the caller, COMMAND's SigIgn is %s and SigBlk %s, want 2 and 200",
			st["SigIgn"], st["SigBlk"])
	}
}

func TestEnvironmentAndLimitsPassThrough(t *testing.T) {
	cmd := exec.Command(itest.Bin().Reaper, "env")
	cmd.Env = []string{"A=1", "PATH=" + os.Getenv("PATH"), "REAPER_GRACE=2s", "WEIRD= x=y "}
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	// Unchanged, but for the marker reaper sets, and its own configuration
	// (REAPER_GRACE), which COMMAND does not get.
	got := strings.Fields(strings.ReplaceAll(string(out), " ", "_"))
	want := []string{"A=1", "PATH=" + os.Getenv("PATH"), "WEIRD=_x=y_"}
	if len(got) != len(want)+1 || fmt.Sprint(got[:len(want)]) != fmt.Sprint(want) ||
		!regexp.MustCompile(`^REAPER_INSTANCE=run-\d+-\w+$`).MatchString(got[len(want)]) {
		t.Errorf("COMMAND's environment is %v, want %v and REAPER_INSTANCE", got, want)
	}
	if _, err := exec.LookPath("prlimit"); err != nil {
		itest.Skip(t, "prlimit (util-linux) not installed")
	}
	out, err = exec.Command("prlimit", "--nofile=1000:4000", itest.Bin().Reaper, "sh", "-c", "ulimit -Sn; ulimit -Hn").Output()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Fields(string(out)); fmt.Sprint(got) != "[1000 4000]" {
		t.Errorf("COMMAND's RLIMIT_NOFILE is %v, want the original [1000 4000]", got)
	}
}

func TestBrokenStderrDoesNotReachCommand(t *testing.T) {
	// reaper's stderr is a pipe whose reader goes away once COMMAND runs:
	// from then on every -vv line fails with EPIPE. reaper must live on, and
	// COMMAND must not see a SIGPIPE.
	rec := itest.NewFIFO(t, "child")
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), itest.Deadline)
	defer cancel()
	cmd := exec.CommandContext(ctx, itest.Bin().Reaper, "-vv", itest.Bin().Helper, "record", rec.Path)
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	rec.Ready(t)
	pr.Close()
	for _, sig := range []syscall.Signal{syscall.SIGUSR1, syscall.SIGUSR2} {
		cmd.Process.Signal(sig)
		if got := rec.Next(t); got != signals.Name(sig) {
			t.Fatalf("sent %s, COMMAND recorded %s", signals.Name(sig), got)
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	err = cmd.Wait()
	if got := append([]string{rec.Next(t)}, rec.Rest()...); fmt.Sprint(got) != "[SIGTERM]" {
		t.Errorf("COMMAND recorded %v at the end, want [SIGTERM] and no SIGPIPE", got)
	}
	if err != nil {
		t.Errorf("reaper with a broken stderr: %v, want exit 0", err)
	}
	// The reader is gone before reaper starts, so that its very first lines
	// fail: "contained" is written as COMMAND has just been started, in
	// cgroup mode. COMMAND gets USR1 first, never a SIGPIPE, and the
	// status is its own.
	for _, mode := range []string{"on", "off"} {
		if mode == "on" {
			itest.RequireRoot(t)
		}
		rec := itest.NewFIFO(t, "child-"+mode)
		pr, pw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		pr.Close()
		cmd := exec.CommandContext(ctx, itest.Bin().Reaper, "-vv", "--cgroup="+mode, itest.Bin().Helper, "record", rec.Path)
		cmd.Stderr = pw
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		pw.Close()
		rec.Ready(t)
		cmd.Process.Signal(syscall.SIGUSR1)
		if got := rec.Next(t); got != "SIGUSR1" {
			t.Errorf("--cgroup=%s: sent SIGUSR1, COMMAND recorded %s", mode, got)
		}
		cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			t.Errorf("--cgroup=%s: reaper with a broken stderr: %v, want COMMAND's exit 0", mode, err)
		}
	}
	// With stdout and stderr closed, the Go runtime opens /dev/null there.
	if out, err := exec.CommandContext(ctx, "sh", "-c", "exec "+itest.Bin().Reaper+" -vv sh -c 'exit 4' >&- 2>&-").CombinedOutput(); err == nil ||
		err.(*exec.ExitError).ExitCode() != 4 {
		t.Errorf("with stdout and stderr closed: %v %s, want exit 4", err, out)
	}
}

func TestStopSignalBeforeCommandStarts(t *testing.T) {
	// reaper waits for a port: SIGTERM then must end reaper at once, with
	// 128+15, without starting COMMAND only to stop it.
	ran := itest.SharedDir(t) + "/ran"
	port, _ := itest.HeldPort(t)
	s := itest.Start(t, itest.Opts{Args: []string{"-v", "--wait-port=" + port, "--wait-port-timeout=60s", "touch", ran}})
	s.Stderr.WaitFor(t, regexp.MustCompile(`port is held`))
	s.Signal(syscall.SIGTERM)
	r := s.Wait()
	if r.Status() != 128+15 {
		t.Errorf("exit %d, want 143; stderr:\n%s", r.Status(), r.Stderr)
	}
	if _, err := os.Stat(ran); err == nil {
		t.Errorf("COMMAND ran; stderr:\n%s", r.Stderr)
	}
}
