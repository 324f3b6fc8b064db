// Package signals holds reaper's signal policy: how signals are named, which
// ones reaper catches and forwards, where they go and how they are rewritten.
// It is pure: nothing here touches a process.
//
// Signal numbers and names are the architecture's own, from
// golang.org/x/sys/unix: SIGUSR1 is 10 on x86, arm, arm64, ppc64, s390x,
// riscv64 and loong64, and 16 on mips, where signals go up to 127.
package signals

import (
	"fmt"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// The real-time signals, numbered as programs and kill(1) number them.
const (
	// RTMin is glibc's SIGRTMIN, as kill(1) and bash name it: the
	// kernel's first real-time signal, 32, plus the two glibc keeps for
	// its threads. It is 34 on every architecture. musl keeps three: a
	// musl program's SIGRTMIN is 35, so under musl give real-time signals
	// by number.
	RTMin = syscall.Signal(34)
	// RTMax is the C library's SIGRTMAX: 64, or 127 on mips (see rtMax).
	RTMax = syscall.Signal(rtMax)
)

// aliases are other names Linux accepts for a signal.
var aliases = map[string]syscall.Signal{
	"IOT": unix.SIGIOT, "CLD": unix.SIGCLD, "POLL": unix.SIGPOLL,
}

// Name returns the conventional name of sig: "SIGTERM", "SIGRTMIN+2",
// "SIGRTMAX", or "signal 33" for a number with no name. Real-time signals
// are named as kill -l names them: from SIGRTMIN up to the middle of the
// range, from SIGRTMAX down beyond it.
func Name(sig syscall.Signal) string {
	if name := unix.SignalName(sig); name != "" {
		return name
	}
	switch {
	case sig == RTMin:
		return "SIGRTMIN"
	case sig > RTMin && sig-RTMin <= (RTMax-RTMin)/2:
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
// between 1 and RTMax.
func Parse(s string) (syscall.Signal, error) {
	name := strings.ToUpper(strings.TrimSpace(s))
	if n, err := strconv.Atoi(name); err == nil {
		if n < 1 || n > int(RTMax) {
			return 0, fmt.Errorf("signal number %d out of range 1-%d", n, RTMax)
		}
		return syscall.Signal(n), nil
	}
	name = strings.TrimPrefix(name, "SIG")
	if sig := unix.SignalNum("SIG" + name); sig != 0 {
		return sig, nil
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
		if offset == "" || strings.Trim(offset, "0123456789") != "" {
			return 0, false // digits only: no "RTMIN+", "RTMIN++3" or "RTMAX- 1"
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
		if err != nil || n < 0 || n > int(RTMax-RTMin) {
			return 0, false
		}
		sig += syscall.Signal(sign * n)
	}
	if sig < RTMin || sig > RTMax {
		return 0, false
	}
	return sig, true
}
