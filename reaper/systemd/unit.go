// Package systemd is reaper's side of systemd: which unit reaper runs in,
// that unit's stop timeout (from systemctl, bounded), and systemd's time
// spans. The notification relay is its sub-package notify.
package systemd

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
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

// CheckStopTimeout warns when reaper runs in a systemd service whose stop
// timeout is not above the grace period: systemd then SIGKILLs reaper (or,
// with KillMode=process, reaper alone) before its teardown has sent its own
// SIGKILLs, and what ignored SIGTERM survives the stop. systemd exports
// INVOCATION_ID to the processes of a unit; the unit is the last one named in
// /proc/self/cgroup, and `systemctl show` gives its TimeoutStopUSec. Anything
// missing (no systemctl, no unit, no answer within a second) ends the check
// without a word above debug.
func CheckStopTimeout(grace time.Duration, files cgroup.Files, log *logs.Logger) {
	if _, ok := os.LookupEnv("INVOCATION_ID"); !ok || grace == 0 || files.Err != nil {
		return
	}
	unit, user := unitFromCgroup(string(files.Own))
	if unit == "" {
		return
	}
	timeout, err := unitStopTimeout(unit, user)
	if err != nil {
		log.Debug("cannot learn the unit's stop timeout", logs.String("unit", unit), logs.Err(err))
		return
	}
	if timeout > 0 && grace >= timeout {
		log.Warn("the grace period is not below the unit's stop timeout: systemd will SIGKILL reaper before its teardown ends "+
			"(give the unit a larger TimeoutStopSec=, or reaper a smaller --grace)",
			logs.String("unit", unit), logs.Duration("grace", grace), logs.Duration("timeout_stop", timeout))
	}
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

// unitStopTimeout asks systemctl for the unit's TimeoutStopUSec. 0 means
// none (infinity).
func unitStopTimeout(unit string, user bool) (time.Duration, error) {
	path, err := spawn.LookPath("systemctl")
	if err != nil {
		return 0, err
	}
	args := []string{"systemctl", "--system", "show", "--property=TimeoutStopUSec", "--value", unit}
	if user {
		args[1] = "--user"
	}
	out, err := output(path, args, systemctlWait)
	if err != nil {
		return 0, err
	}
	return parseTimespan(strings.TrimSpace(out))
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
