package signals

import (
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseAcceptsEverySpelling(t *testing.T) {
	cases := map[string]syscall.Signal{
		"TERM": syscall.SIGTERM, "SIGTERM": syscall.SIGTERM, "term": syscall.SIGTERM,
		"15": syscall.SIGTERM, " sigusr1 ": syscall.SIGUSR1, "IOT": syscall.SIGABRT,
		"CLD": syscall.SIGCHLD, "poll": syscall.SIGIO,
		"RTMIN": 34, "RTMIN+1": 35, "SIGRTMIN+15": 49, "RTMAX-14": RTMax - 14,
		"rtmax": RTMax, strconv.Itoa(int(RTMax)): RTMax, "1": syscall.SIGHUP,
	}
	for in, want := range cases {
		got, err := Parse(in)
		if err != nil || got != want {
			t.Errorf("Parse(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
}

// TestNamesAreTheArchitecturesOwn: every standard signal has the number
// and name golang.org/x/sys gives this architecture (USR1 is 10 on x86 and
// arm, 16 on mips), and no other architecture's name is taken.
func TestNamesAreTheArchitecturesOwn(t *testing.T) {
	for sig := syscall.Signal(1); sig <= 31; sig++ {
		name := unix.SignalName(sig)
		if name == "" {
			t.Fatalf("x/sys names no signal %d", sig)
		}
		if got, err := Parse(name); err != nil || got != sig {
			t.Errorf("Parse(%q) = %v, %v; want %d", name, got, err, sig)
		}
		if got := Name(sig); got != name {
			t.Errorf("Name(%d) = %q, want %q", sig, got, name)
		}
	}
	for name, sig := range map[string]syscall.Signal{"USR1": unix.SIGUSR1, "CHLD": unix.SIGCHLD,
		"STOP": unix.SIGSTOP, "CONT": unix.SIGCONT, "PWR": unix.SIGPWR, "SYS": unix.SIGSYS} {
		if got, _ := Parse(name); got != sig {
			t.Errorf("Parse(%q) = %d, want %d", name, got, sig)
		}
	}
	// SIGSTKFLT is x86's and arm's (16), SIGEMT mips's (7): each is unknown
	// where the other is.
	if _, err := Parse("STKFLT"); (err == nil) != (unix.SignalNum("SIGSTKFLT") != 0) {
		t.Errorf("Parse(STKFLT): %v", err)
	}
	if _, err := Parse("EMT"); (err == nil) != (unix.SignalNum("SIGEMT") != 0) {
		t.Errorf("Parse(EMT): %v", err)
	}
}

func TestParseRejectsNonsense(t *testing.T) {
	for _, in := range []string{"", "0", strconv.Itoa(int(RTMax) + 1), "-1", "SIG", "TERMX", "RTMIN-1", "RTMAX+1",
		"RTMIN+" + strconv.Itoa(int(RTMax-RTMin)+1), "RTMIN+x", "SIGSIGTERM", "RTMIN+99999999999999999999",
		"RTMIN+", "RTMIN++3", "RTMAX--1", "RTMAX-+1", "RTMIN+ 1"} {
		if sig, err := Parse(in); err == nil {
			t.Errorf("Parse(%q) = %v, want an error", in, sig)
		}
	}
}

func TestNameRoundTrips(t *testing.T) {
	for sig := syscall.Signal(1); sig <= RTMax; sig++ {
		name := Name(sig)
		if sig == 32 || sig == 33 {
			if name != "signal "+map[syscall.Signal]string{32: "32", 33: "33"}[sig] {
				t.Errorf("Name(%d) = %q", sig, name)
			}
			continue
		}
		back, err := Parse(name)
		if err != nil || back != sig {
			t.Errorf("Parse(Name(%d) = %q) = %v, %v", sig, name, back, err)
		}
	}
	// kill -l names the lower half of the real-time range from SIGRTMIN,
	// the upper half from SIGRTMAX.
	half := (RTMax - RTMin) / 2
	if got, want := Name(RTMin+half), "SIGRTMIN+"+strconv.Itoa(int(half)); got != want {
		t.Errorf("Name(%d) = %q, want %q as kill -l prints it", RTMin+half, got, want)
	}
	if got, want := Name(RTMin+half+1), "SIGRTMAX-"+strconv.Itoa(int(RTMax-RTMin-half-1)); got != want {
		t.Errorf("Name(%d) = %q, want %q as kill -l prints it", RTMin+half+1, got, want)
	}
}

// TestSigsetHoldsEverySignal: a set built of any signals up to SIGRTMAX
// holds those and no other, whatever the width of the architecture's words.
func TestSigsetHoldsEverySignal(t *testing.T) {
	sigs := []syscall.Signal{1, 2, 31, 32, 33, 63, 64, RTMax}
	set := Sigset(sigs...)
	if got := Members(set); !slices.Equal(got, slices.Compact(sigs)) {
		t.Errorf("Members(Sigset(%v)) = %v", sigs, got)
	}
	for _, sig := range Members(Sigset(0, RTMax+1, -1)) {
		t.Errorf("a signal out of range made %d a member", sig)
	}
	if KernelSigsetSize*8 < uintptr(RTMax) || KernelSigsetSize%8 != 0 {
		t.Errorf("KernelSigsetSize %d cannot hold %d signals", KernelSigsetSize, RTMax)
	}
}

func TestForwardableExcludesOnlyWhatCannotBeForwarded(t *testing.T) {
	got := map[syscall.Signal]bool{}
	for _, sig := range Forwardable() {
		got[sig] = true
	}
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT,
		syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH, syscall.SIGURG, syscall.SIGCONT,
		syscall.SIGTSTP, syscall.SIGPIPE, syscall.SIGALRM, syscall.SIGABRT,
		syscall.SIGSEGV, syscall.SIGBUS, syscall.SIGFPE, syscall.SIGILL, syscall.SIGTRAP, syscall.SIGSYS, 35, 64} {
		if !got[sig] {
			t.Errorf("%s is not forwarded", Name(sig))
		}
	}
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGSTOP, syscall.SIGCHLD, syscall.SIGPROF, 32, 33, 34} {
		if got[sig] {
			t.Errorf("%s is forwarded, it must not be", Name(sig))
		}
	}
	for sig := CatchMax + 1; sig <= RTMax; sig++ { // mips: 65 to 127, which Go cannot catch
		if got[sig] {
			t.Errorf("%s is forwarded: a Go program cannot catch it", Name(sig))
		}
	}
}

func TestPolicyRewritesDropsAndStops(t *testing.T) {
	p := Policy{StopOn: []syscall.Signal{syscall.SIGTERM}}
	for _, s := range []string{"TERM:QUIT", "HUP:0", "USR1:USR2", "USR1:WINCH"} {
		r, err := ParseRewrite(s)
		if err != nil {
			t.Fatalf("ParseRewrite(%q): %v", s, err)
		}
		p.Rewrites = append(p.Rewrites, r)
	}
	check := func(in, want syscall.Signal, wantOK bool) {
		t.Helper()
		got, ok := p.Forward(in)
		if got != want || ok != wantOK {
			t.Errorf("Forward(%s) = %v, %v; want %v, %v", Name(in), got, ok, want, wantOK)
		}
	}
	check(syscall.SIGTERM, syscall.SIGQUIT, true)
	check(syscall.SIGHUP, 0, false)
	check(syscall.SIGUSR1, syscall.SIGWINCH, true) // the last rewrite of a signal wins
	check(syscall.SIGINT, syscall.SIGINT, true)
	// A stop request is the signal received: rewriting what is forwarded
	// changes nothing (--rewrite=TERM:QUIT for nginx: docker stop stops).
	if !p.IsStop(syscall.SIGTERM) {
		t.Error("SIGTERM rewritten to SIGQUIT is no longer a stop request")
	}
	for _, sig := range []syscall.Signal{syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGUSR2} {
		if p.IsStop(sig) {
			t.Errorf("%s is a stop request: it must only be forwarded", Name(sig))
		}
	}
}

func TestParseStopOn(t *testing.T) {
	for _, s := range []string{"INT", "hup", "15", "RTMIN+1", "SEGV"} {
		if _, err := ParseStopOn(s); err != nil {
			t.Errorf("ParseStopOn(%q): %v", s, err)
		}
	}
	for _, s := range []string{"KILL", "STOP", "CHLD", "PROF", "33", "BOGUS", ""} {
		if sig, err := ParseStopOn(s); err == nil {
			t.Errorf("ParseStopOn(%q) = %v, want an error", s, sig)
		}
	}
	if RTMax > CatchMax { // mips
		if _, err := ParseStopOn("RTMAX"); err == nil || !strings.Contains(err.Error(), "1 to 64") {
			t.Errorf("ParseStopOn(RTMAX) on mips: %v, want an error that says why", err)
		}
	}
}

func TestParseRewriteErrors(t *testing.T) {
	for _, s := range []string{"TERM", "TERM:", ":TERM", "KILL:TERM", "CHLD:TERM", "TERM:BOGUS", "PROF:TERM"} {
		if r, err := ParseRewrite(s); err == nil {
			t.Errorf("ParseRewrite(%q) = %v, want an error", s, r)
		}
	}
}

func TestAddRewriteRefusesConflicts(t *testing.T) {
	var rules []Rewrite
	for _, s := range []string{"HUP:0", "TERM:QUIT", "HUP:0"} {
		r, _ := ParseRewrite(s)
		var err error
		if rules, err = AddRewrite(rules, r); err != nil {
			t.Fatalf("AddRewrite(%v, %s): %v", rules, s, err)
		}
	}
	if len(rules) != 2 {
		t.Errorf("rules %v, want HUP:0 and TERM:QUIT once each", rules)
	}
	for _, s := range []string{"HUP:INT", "SIGHUP:TERM", "1:2", "TERM:0"} {
		r, _ := ParseRewrite(s)
		_, err := AddRewrite(rules, r)
		if err == nil || !strings.Contains(err.Error(), r.String()) ||
			(!strings.Contains(err.Error(), "SIGHUP:0") && !strings.Contains(err.Error(), "SIGTERM:SIGQUIT")) {
			t.Errorf("AddRewrite(%v, %s) = %v, want an error naming both rules", rules, s, err)
		}
	}
}

func TestParseTarget(t *testing.T) {
	if tg, err := ParseTarget("Child"); err != nil || tg != Child {
		t.Errorf("ParseTarget(Child) = %v, %v", tg, err)
	}
	if tg, err := ParseTarget("group"); err != nil || tg != Group {
		t.Errorf("ParseTarget(group) = %v, %v", tg, err)
	}
	if _, err := ParseTarget("session"); err == nil {
		t.Error("ParseTarget(session) gave no error")
	}
}
