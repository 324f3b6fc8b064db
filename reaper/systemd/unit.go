// Package systemd is reaper's side of systemd: which unit reaper runs in,
// that unit's stop timeout and whether its cgroup is delegated (from
// systemctl, bounded, and the cgroup's attributes), and systemd's time
// spans. The notification relay is its sub-package notify.
package systemd

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/reaper-init/reaper/reaper/cgroup"
	"github.com/reaper-init/reaper/reaper/exitcode"
	"github.com/reaper-init/reaper/reaper/handle"
	"github.com/reaper-init/reaper/reaper/logs"
	"github.com/reaper-init/reaper/reaper/spawn"
)

// systemctlWait bounds how long reaper waits for systemctl at start-up.
const systemctlWait = time.Second

// Unit is the systemd unit reaper runs in, as far as reaper can tell.
type Unit struct {
	Name string // foo.service, session-2.scope
	User bool   // a user manager's unit (below user@UID.service)
	// Service is set when systemd started reaper as a process of a
	// service (it exported INVOCATION_ID): systemd then stops it, and its
	// stop timeout applies.
	Service bool
	// StopTimeout is the unit's TimeoutStopUSec, 0 for infinity; known
	// when TimeoutKnown.
	StopTimeout  time.Duration
	TimeoutKnown bool
	// Delegated: the unit's cgroup is delegated (Delegate=yes), so that a
	// process of the unit may make groups below it. Otherwise systemd owns
	// the whole subtree, and nobody else may create or move anything there.
	Delegated bool
}

// Find returns the unit reaper runs in: the last service or scope on
// reaper's path in systemd's cgroup hierarchy. For a service, systemctl is
// asked for its stop timeout and delegation (bounded by a second); the
// cgroup's trusted.delegate or user.delegate attribute (systemd 251 and
// later) also says a unit is delegated. ok is false outside a unit.
// Anything missing (no systemctl, no answer) is logged at debug level.
func Find(files cgroup.Files, log *logs.Logger) (u Unit, ok bool) {
	if files.Err != nil {
		return u, false
	}
	u.Name, u.User = unitFromCgroup(string(files.Own))
	if u.Name == "" {
		return u, false
	}
	_, u.Service = os.LookupEnv("INVOCATION_ID")
	u.Delegated = delegatedByAttribute(files, u.Name)
	if !u.Service {
		return u, true
	}
	props, err := unitProperties(u.Name, u.User, "TimeoutStopUSec", "Delegate")
	if err != nil {
		log.Debug("cannot ask systemctl about the unit", logs.String("unit", u.Name), logs.Err(err))
		return u, true
	}
	if d, err := parseTimespan(props["TimeoutStopUSec"]); err == nil {
		u.StopTimeout, u.TimeoutKnown = d, true
	}
	u.Delegated = u.Delegated || props["Delegate"] == "yes"
	return u, true
}

// delegatedByAttribute reports whether systemd marked the cgroup of unit
// delegated: "1" in its trusted.delegate (system manager) or user.delegate
// (user manager) attribute, in systemd's own hierarchy (name=systemd on a
// hybrid layout) or in cgroup2.
func delegatedByAttribute(files cgroup.Files, unit string) bool {
	for _, controller := range []string{"name=systemd", ""} {
		_, dir, _, err := files.Group(controller)
		if err != nil {
			continue
		}
		for d := dir; strings.Contains(d, unit) && d != "/"; d = filepath.Dir(d) {
			if filepath.Base(d) == unit && hasDelegateAttribute(d) {
				return true
			}
		}
	}
	return false
}

// hasDelegateAttribute reports whether the cgroup directory dir carries
// systemd's mark of a delegated cgroup.
func hasDelegateAttribute(dir string) bool {
	for _, attr := range []string{"trusted.delegate", "user.delegate"} {
		var buf [8]byte
		if n, err := unix.Getxattr(dir, attr, buf[:]); err == nil && string(buf[:n]) == "1" {
			return true
		}
	}
	return false
}

// unitFromCgroup returns the systemd unit a process belongs to, given the text
// of its /proc/PID/cgroup: the last service or scope in the path of the
// cgroup v2 line, or of the name=systemd line of a v1 or hybrid layout. user
// is true when the unit belongs to a user manager (below user@UID.service).
func unitFromCgroup(data string) (unit string, user bool) {
	// systemd's own hierarchy wins over the unified one.
	path, err := cgroup.ParsePath([]byte(data), "name=systemd")
	if err != nil {
		path, _ = cgroup.ParsePath([]byte(data), "")
	}
	parts := strings.Split(path, "/")
	for i := len(parts) - 1; i >= 0; i-- {
		if strings.HasSuffix(parts[i], ".service") || strings.HasSuffix(parts[i], ".scope") {
			for _, p := range parts[:i] {
				if strings.HasPrefix(p, "user@") && strings.HasSuffix(p, ".service") {
					user = true
				}
			}
			return parts[i], user
		}
	}
	return "", false
}

// unitProperties asks systemctl for properties of the unit (of the user
// manager when user), as NAME=value lines.
func unitProperties(unit string, user bool, names ...string) (map[string]string, error) {
	path, err := spawn.LookPath("systemctl")
	if err != nil {
		return nil, err
	}
	args := []string{"systemctl", "--system", "show"}
	if user {
		args[1] = "--user"
	}
	for _, name := range names {
		args = append(args, "--property="+name)
	}
	out, err := output(path, append(args, "--", unit), systemctlWait)
	if err != nil {
		return nil, err
	}
	props := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if name, value, ok := strings.Cut(line, "="); ok {
			props[name] = strings.TrimSpace(value)
		}
	}
	return props, nil
}

// output runs a program and returns its standard output; stdin and stderr
// are /dev/null. It is for the time before COMMAND starts, when no other
// wait4 runs: it reaps the program with wait4 on its pid alone. Everything
// is bounded by wait: the output, and the program's exit, watched through
// a pidfd; a program that overstays is SIGKILLed (and, should even that
// not end it, left for the event loop to reap).
func output(path string, argv []string, wait time.Duration) (string, error) {
	deadline := time.Now().Add(wait)
	devNull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return "", err
	}
	defer devNull.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return "", err
	}
	defer r.Close()
	pidfd := -1
	pid, err := syscall.ForkExec(path, argv, &syscall.ProcAttr{
		Env: os.Environ(), Files: []uintptr{devNull.Fd(), w.Fd(), devNull.Fd()},
		Sys: &syscall.SysProcAttr{PidFD: &pidfd},
	})
	w.Close()
	if err != nil {
		return "", fmt.Errorf("%s: %w", argv[0], err)
	}
	h := handle.Own(pid, pidfd)
	defer h.Close()
	r.SetReadDeadline(deadline)
	out, readErr := io.ReadAll(io.LimitReader(r, 64<<10))
	if readErr != nil || !handle.WaitAll([]*handle.Handle{h}, deadline, nil) {
		h.Signal(syscall.SIGKILL)
		if !handle.WaitAll([]*handle.Handle{h}, time.Now().Add(wait), nil) {
			return "", fmt.Errorf("%s: did not exit, even after SIGKILL", argv[0])
		}
	}
	var ws syscall.WaitStatus
	for {
		if _, err := syscall.Wait4(pid, &ws, 0, nil); !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	switch {
	case readErr != nil:
		return "", fmt.Errorf("%s: %w", argv[0], readErr)
	case !ws.Exited() || ws.ExitStatus() != 0:
		return "", fmt.Errorf("%s: %s", argv[0], exitcode.Describe(unix.WaitStatus(ws)))
	}
	return string(out), nil
}

// timespanUnits are the units of systemd's time spans, as format_timespan
// writes them and parse_sec reads them.
var timespanUnits = map[string]time.Duration{
	"us": time.Microsecond, "µs": time.Microsecond, "μs": time.Microsecond, "usec": time.Microsecond,
	"ms": time.Millisecond, "msec": time.Millisecond,
	"": time.Second, "s": time.Second, "sec": time.Second,
	"m": time.Minute, "min": time.Minute,
	"h": time.Hour, "hr": time.Hour,
	"d": 24 * time.Hour,
	"w": 7 * 24 * time.Hour,
	"M": 2629800 * time.Second, "month": 2629800 * time.Second, // 30.44 days
	"y": 31557600 * time.Second, // 365.25 days
}

// parseTimespan reads a systemd time span as `systemctl show` prints it:
// "1min 30s", "2.500000s", "100ms", "0", or "infinity" (returned as 0).
func parseTimespan(s string) (time.Duration, error) {
	if s == "infinity" {
		return 0, nil
	}
	fields := strings.Fields(s)
	if len(fields) == 0 {
		return 0, errors.New("empty time span")
	}
	var total float64 // nanoseconds; float, so that a huge span cannot wrap
	for _, f := range fields {
		end := strings.IndexFunc(f, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
		if end < 0 {
			end = len(f)
		}
		n, err := strconv.ParseFloat(f[:end], 64)
		unit, known := timespanUnits[f[end:]]
		if err != nil || !known || n < 0 {
			return 0, fmt.Errorf("%q is not a systemd time span", s)
		}
		total += n * float64(unit)
	}
	if total >= math.MaxInt64 {
		return 0, fmt.Errorf("%q is out of range", s)
	}
	return time.Duration(total), nil
}
