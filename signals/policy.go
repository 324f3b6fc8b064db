package signals

import (
	"fmt"
	"strings"
	"syscall"
)

// Target says who receives the signals reaper forwards.
type Target int

const (
	// Group sends forwarded signals to COMMAND's whole process group.
	Group Target = iota
	// Child sends forwarded signals to COMMAND alone.
	Child
)

// String returns the flag value that selects t.
func (t Target) String() string {
	if t == Child {
		return "child"
	}
	return "group"
}

// ParseTarget reads "group" or "child".
func ParseTarget(s string) (Target, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "group":
		return Group, nil
	case "child":
		return Child, nil
	}
	return Group, fmt.Errorf("%q is neither group nor child", s)
}

// notForwarded lists the catchable signals reaper leaves alone: SIGCHLD is
// its own (it reaps), the fault signals are synchronous (only the faulting
// thread gets them), and SIGPROF belongs to the Go runtime's profiler, which
// consumes it before any handler could see it.
var notForwarded = map[syscall.Signal]bool{
	syscall.SIGCHLD: true, syscall.SIGILL: true, syscall.SIGTRAP: true,
	syscall.SIGBUS: true, syscall.SIGFPE: true, syscall.SIGSEGV: true,
	syscall.SIGSYS: true, syscall.SIGPROF: true,
}

// Forwardable returns every signal reaper catches in order to forward it:
// 1 to 31 except SIGKILL, SIGSTOP and the ones in notForwarded, then
// SIGRTMIN+1 to SIGRTMAX. SIGRTMIN itself (34) is reserved by the Go runtime
// for libc compatibility and cannot be caught.
func Forwardable() []syscall.Signal {
	var sigs []syscall.Signal
	for sig := syscall.Signal(1); sig <= RTMax; sig++ {
		if Catchable(sig) && !notForwarded[sig] {
			sigs = append(sigs, sig)
		}
	}
	return sigs
}

// Catchable reports whether a Go program can install a handler for sig.
func Catchable(sig syscall.Signal) bool {
	switch {
	case sig == syscall.SIGKILL || sig == syscall.SIGSTOP:
		return false
	case sig >= 1 && sig <= 31:
		return true
	case sig > RTMin && sig <= RTMax:
		return true
	}
	return false
}

// stopSignals are the signals that ask reaper to stop, unless rewritten.
var stopSignals = map[syscall.Signal]bool{
	syscall.SIGTERM: true, syscall.SIGINT: true, syscall.SIGQUIT: true, syscall.SIGHUP: true,
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
		return Rewrite{}, fmt.Errorf("rewrite %q: %s is never forwarded", s, Name(r.From))
	}
	if strings.TrimSpace(to) == "0" {
		return r, nil
	}
	if r.To, err = Parse(to); err != nil {
		return Rewrite{}, fmt.Errorf("rewrite %q: %w", s, err)
	}
	return r, nil
}

// String returns r in the form ParseRewrite reads.
func (r Rewrite) String() string {
	if r.To == 0 {
		return Name(r.From) + ":0"
	}
	return Name(r.From) + ":" + Name(r.To)
}

// Policy decides what happens to a signal reaper receives.
type Policy struct {
	// Target says who receives forwarded signals.
	Target Target
	// Rewrites apply before forwarding; a later rewrite of the same
	// signal wins.
	Rewrites []Rewrite
}

// Forward returns the signal to forward when sig is received, and false
// when sig is dropped.
func (p Policy) Forward(sig syscall.Signal) (syscall.Signal, bool) {
	if r, ok := p.rewrite(sig); ok {
		return r.To, r.To != 0
	}
	return sig, true
}

// IsStop reports whether receiving sig starts a stop: SIGTERM, SIGINT,
// SIGQUIT and SIGHUP do, unless a rewrite names them.
func (p Policy) IsStop(sig syscall.Signal) bool {
	_, rewritten := p.rewrite(sig)
	return stopSignals[sig] && !rewritten
}

func (p Policy) rewrite(sig syscall.Signal) (Rewrite, bool) {
	for i := len(p.Rewrites) - 1; i >= 0; i-- {
		if p.Rewrites[i].From == sig {
			return p.Rewrites[i], true
		}
	}
	return Rewrite{}, false
}
