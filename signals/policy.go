package signals

import (
	"fmt"
	"slices"
	"strings"
	"syscall"
)

// Target says who receives the signals reaper forwards.
type Target int

const (
	// Child sends every forwarded signal to COMMAND alone, as tini and
	// catatonit do, and as every manager sends its stop signal to the
	// process it started: systemd (KillMode=mixed) to the main process,
	// docker and the kubelet to the container's PID 1, a CI runner to the
	// step's process. COMMAND's own process group learns of a stop once
	// COMMAND has exited (see reaper/stop).
	Child Target = iota
	// Group sends every forwarded signal to COMMAND's whole process group,
	// as dumb-init and a terminal's Ctrl-C do.
	Group
)

var targetNames = [...]string{"child", "group"}

// String returns the flag value that selects t.
func (t Target) String() string { return targetNames[t] }

// ParseTarget reads "child" or "group".
func ParseTarget(s string) (Target, error) {
	for t, name := range targetNames {
		if strings.EqualFold(strings.TrimSpace(s), name) {
			return Target(t), nil
		}
	}
	return Child, fmt.Errorf("%q is neither child nor group", s)
}

// notForwarded lists the signals reaper would catch but leaves alone:
// SIGCHLD is its own (it reaps), and SIGPROF belongs to the Go runtime's
// profiler, whose handler consumes every SIGPROF before any Go code could
// see it. (The fault signals SIGILL, SIGTRAP, SIGBUS, SIGFPE, SIGSEGV and
// SIGSYS are forwarded when someone sends them with kill(2); a real fault
// of reaper's own still crashes it.)
var notForwarded = map[syscall.Signal]bool{
	syscall.SIGCHLD: true, syscall.SIGPROF: true,
}

// Forwardable returns every signal reaper catches in order to forward it:
// 1 to 31 except SIGKILL, SIGSTOP and the ones in notForwarded, then
// SIGRTMIN+1 to SIGRTMAX, or to 64 on mips (see CatchMax). SIGRTMIN itself
// (34) is reserved by the Go runtime for libc compatibility and cannot be
// caught.
func Forwardable() []syscall.Signal {
	var sigs []syscall.Signal
	for sig := syscall.Signal(1); sig <= CatchMax; sig++ {
		if Catchable(sig) && !notForwarded[sig] {
			sigs = append(sigs, sig)
		}
	}
	return sigs
}

// CatchMax is the highest signal a Go program can catch: os/signal knows
// signals 1 to 64 on every architecture. On mips, where SIGRTMAX is 127,
// the Go runtime's handler drops signals 65 to 127: reaper cannot forward
// them, nor take them as stop requests. It can still send them.
const CatchMax = min(RTMax, 64)

// Catchable reports whether a Go program can install a handler for sig.
func Catchable(sig syscall.Signal) bool {
	switch {
	case sig == syscall.SIGKILL || sig == syscall.SIGSTOP:
		return false
	case sig >= 1 && sig <= 31:
		return true
	case sig > RTMin && sig <= CatchMax:
		return true
	}
	return false
}

// Rewrite maps one received signal to another before it is forwarded.
// To == 0 drops From.
type Rewrite struct {
	From, To syscall.Signal
}

// ParseRewrite reads "FROM:TO", for example "TERM:QUIT" or "HUP:0".
func ParseRewrite(s string) (Rewrite, error) {
	from, to, ok := strings.Cut(s, ":")
	if !ok {
		return Rewrite{}, fmt.Errorf("rewrite %q is not FROM:TO", s)
	}
	var r Rewrite
	var err error
	if r.From, err = Parse(from); err != nil {
		return Rewrite{}, fmt.Errorf("rewrite %q: %w", s, err)
	}
	if !Catchable(r.From) || notForwarded[r.From] {
		return Rewrite{}, fmt.Errorf("rewrite %q: %s is never forwarded%s", s, Name(r.From), beyondCatch(r.From))
	}
	if strings.TrimSpace(to) == "0" {
		return r, nil
	}
	if r.To, err = Parse(to); err != nil {
		return Rewrite{}, fmt.Errorf("rewrite %q: %w", s, err)
	}
	return r, nil
}

// AddRewrite returns rules with r added. Two rules for one signal that
// say different things (HUP:0 and HUP:INT) are an error naming both: which
// one was meant cannot be told. A rule given twice is kept once.
func AddRewrite(rules []Rewrite, r Rewrite) ([]Rewrite, error) {
	for _, old := range rules {
		if old.From != r.From {
			continue
		}
		if old.To != r.To {
			return rules, fmt.Errorf("rewrite %s conflicts with rewrite %s: one rule per signal", r, old)
		}
		return rules, nil
	}
	return append(rules, r), nil
}

// String returns r in the form ParseRewrite reads.
func (r Rewrite) String() string {
	if r.To == 0 {
		return Name(r.From) + ":0"
	}
	return Name(r.From) + ":" + Name(r.To)
}

// Policy decides what happens to a signal reaper receives: it is
// forwarded, after rewrites; and when it is a stop request, it also begins
// a stop.
type Policy struct {
	// Target says who receives forwarded signals.
	Target Target
	// Rewrites apply before forwarding, at most one per signal (see
	// AddRewrite); should there be more, the last one wins.
	Rewrites []Rewrite
	// StopOn lists the signals that are stop requests (--stop-on; by
	// default SIGTERM, and the stop signal). Whether a signal is one
	// depends on the signal received, not on what a rewrite forwards.
	StopOn []syscall.Signal
}

// Forward returns the signal to forward when sig is received, and false
// when sig is dropped.
func (p Policy) Forward(sig syscall.Signal) (syscall.Signal, bool) {
	if r, ok := p.rewrite(sig); ok {
		return r.To, r.To != 0
	}
	return sig, true
}

// IsStop reports whether receiving sig is a stop request. Any other signal
// (SIGHUP a reload, SIGQUIT a thread dump, SIGINT a REPL's cancel) is only
// forwarded.
func (p Policy) IsStop(sig syscall.Signal) bool {
	return slices.Contains(p.StopOn, sig)
}

// ParseStopOn reads one signal of --stop-on: any signal reaper forwards.
func ParseStopOn(s string) (syscall.Signal, error) {
	sig, err := Parse(s)
	if err != nil {
		return 0, err
	}
	if !Catchable(sig) || notForwarded[sig] {
		return 0, fmt.Errorf("%s cannot be a stop request: reaper never receives it as one%s", Name(sig), beyondCatch(sig))
	}
	return sig, nil
}

// beyondCatch explains why a signal above CatchMax is never received.
func beyondCatch(sig syscall.Signal) string {
	if sig > CatchMax {
		return fmt.Sprintf(" (a Go program can catch signals 1 to %d only)", CatchMax)
	}
	return ""
}

func (p Policy) rewrite(sig syscall.Signal) (Rewrite, bool) {
	for i := len(p.Rewrites) - 1; i >= 0; i-- {
		if p.Rewrites[i].From == sig {
			return p.Rewrites[i], true
		}
	}
	return Rewrite{}, false
}
