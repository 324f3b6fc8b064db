// Package signals holds reaper's signal policy: how signals are named, which
// ones reaper catches and forwards, where they go and how they are rewritten.
// It is pure: nothing here touches a process.
package signals

import (
	"fmt"
	"strconv"
	"strings"
	"syscall"
)

// Linux signal numbers beyond the standard 31.
const (
	// RTMin is glibc's SIGRTMIN as programs and kill(1) see it. Signals 32
	// and 33 are reserved by the C library's threading implementation.
	RTMin = syscall.Signal(34)
	// RTMax is SIGRTMAX.
	RTMax = syscall.Signal(64)
)

// names maps the standard signal numbers to their names without "SIG".
var names = [...]string{
	1: "HUP", 2: "INT", 3: "QUIT", 4: "ILL", 5: "TRAP", 6: "ABRT", 7: "BUS",
	8: "FPE", 9: "KILL", 10: "USR1", 11: "SEGV", 12: "USR2", 13: "PIPE",
	14: "ALRM", 15: "TERM", 16: "STKFLT", 17: "CHLD", 18: "CONT", 19: "STOP",
	20: "TSTP", 21: "TTIN", 22: "TTOU", 23: "URG", 24: "XCPU", 25: "XFSZ",
	26: "VTALRM", 27: "PROF", 28: "WINCH", 29: "IO", 30: "PWR", 31: "SYS",
}

// aliases are other names Linux accepts for the same numbers.
var aliases = map[string]syscall.Signal{
	"IOT": syscall.SIGABRT, "CLD": syscall.SIGCHLD, "POLL": syscall.SIGIO,
}

// Name returns the conventional name of sig: "SIGTERM", "SIGRTMIN+2",
// "SIGRTMAX", or "signal 33" for a number with no name.
func Name(sig syscall.Signal) string {
	switch {
	case sig > 0 && int(sig) < len(names):
		return "SIG" + names[sig]
	case sig == RTMin:
		return "SIGRTMIN"
	case sig > RTMin && sig-RTMin <= 15: // kill -l style: RTMIN+1..RTMIN+15
		return "SIGRTMIN+" + strconv.Itoa(int(sig-RTMin))
	case sig > RTMin && sig < RTMax:
		return "SIGRTMAX-" + strconv.Itoa(int(RTMax-sig))
	case sig == RTMax:
		return "SIGRTMAX"
	}
	return "signal " + strconv.Itoa(int(sig))
}

// Parse reads a signal given as a name or a number: "TERM", "SIGTERM",
// "term", "15", "RTMIN+3" and "SIGRTMAX-1" are all accepted. Numbers must be
// between 1 and 64.
func Parse(s string) (syscall.Signal, error) {
	name := strings.ToUpper(strings.TrimSpace(s))
	if n, err := strconv.Atoi(name); err == nil {
		if n < 1 || n > int(RTMax) {
			return 0, fmt.Errorf("signal number %d out of range 1-%d", n, RTMax)
		}
		return syscall.Signal(n), nil
	}
	name = strings.TrimPrefix(name, "SIG")
	for n, candidate := range names {
		if candidate != "" && candidate == name {
			return syscall.Signal(n), nil
		}
	}
	if sig, ok := aliases[name]; ok {
		return sig, nil
	}
	if sig, ok := parseRealtime(name); ok {
		return sig, nil
	}
	return 0, fmt.Errorf("unknown signal %q", s)
}

// parseRealtime reads RTMIN, RTMIN+N, RTMAX and RTMAX-N.
func parseRealtime(name string) (syscall.Signal, bool) {
	base, offset, sign := name, "", 1
	if i := strings.IndexAny(name, "+-"); i >= 0 {
		base, offset = name[:i], name[i+1:]
		if name[i] == '-' {
			sign = -1
		}
	}
	var sig syscall.Signal
	switch base {
	case "RTMIN":
		if sign < 0 {
			return 0, false
		}
		sig = RTMin
	case "RTMAX":
		if sign > 0 && offset != "" {
			return 0, false
		}
		sig = RTMax
	default:
		return 0, false
	}
	if offset != "" {
		n, err := strconv.Atoi(offset)
		if err != nil || n < 0 {
			return 0, false
		}
		sig += syscall.Signal(sign * n)
	}
	if sig < RTMin || sig > RTMax {
		return 0, false
	}
	return sig, true
}
