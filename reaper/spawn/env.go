package spawn

import (
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"github.com/reaper-init/reaper/reaper/logs"
	"github.com/reaper-init/reaper/reaper/procfs"
	"github.com/reaper-init/reaper/signals"
)

// Env is COMMAND's environment: reaper's own without the variables
// drop names (reaper's configuration: a reaper started below reaper is
// configured by its own flags), and with the entries of set ("NAME=value")
// replacing or adding theirs.
func Env(drop []string, set ...string) []string {
	names := make(map[string]bool, len(set)+len(drop))
	for _, kv := range set {
		name, _, _ := strings.Cut(kv, "=")
		names[name] = true
	}
	for _, name := range drop {
		names[name] = true
	}
	env := os.Environ()
	out := make([]string, 0, len(env)+len(set))
	for _, kv := range env {
		if name, _, _ := strings.Cut(kv, "="); !names[name] {
			out = append(out, kv)
		}
	}
	return append(out, set...)
}

// PIDVariables returns the variables of reaper's environment that name
// reaper's own pid and that COMMAND must see name its pid instead:
// LISTEN_PID (socket activation: the descriptors from 3 on are meant for
// it) and WATCHDOG_PID (the watchdog: COMMAND pings it).
func PIDVariables(self int) []string {
	var vars []string
	for _, name := range []string{"LISTEN_PID", "WATCHDOG_PID"} {
		if v, ok := os.LookupEnv(name); ok && v == strconv.Itoa(self) {
			vars = append(vars, name)
		}
	}
	return vars
}

// Some of COMMAND's start cannot be done from reaper: a variable that
// names COMMAND's own pid must be in COMMAND's environment when it
// starts, and a signal reaper catches cannot be left ignored for COMMAND
// by a Go program's fork (the runtime resets every signal it handles in
// the child). So reaper then forks a copy of itself, the trampoline, which
// sets those variables to its pid, ignores those signals, sets the signal
// mask COMMAND must start with, and executes COMMAND in its own place:
// COMMAND keeps the pid, and no process is added. The copy is told what to
// do in execVar, whose value is "PPID:DEV:INO:NAME,...:SIG,...:MASK:PATH":
// its parent's pid and the device and inode of reaper's file (the
// trampoline checks both against its own parent and its own file, which it
// can always read, so that a stray variable cannot make reaper a
// trampoline), the variables, the signals to ignore, the signals to block
// (COMMAND's mask) and COMMAND's path. Its argv is COMMAND's.
const execVar = "REAPER_EXEC_WITH_PID"

// trampoline is what the trampoline does before it executes COMMAND.
type trampoline struct {
	pidVars []string         // variables to set to COMMAND's pid
	ignore  []syscall.Signal // signals COMMAND starts with ignored
	mask    []syscall.Signal // COMMAND's signal mask: the signals it starts with blocked
}

// needed reports whether COMMAND must start through the trampoline.
func (t trampoline) needed() bool { return len(t.pidVars) > 0 || len(t.ignore) > 0 }

// env is the environment of the trampoline that starts COMMAND at path,
// for reaper (self).
func (t trampoline) env(env []string, self int, path string) []string {
	value := strings.Join([]string{strconv.Itoa(self), procfs.ExeID(), strings.Join(t.pidVars, ","),
		formatSignals(t.ignore), formatSignals(t.mask), path}, ":")
	return append(env, execVar+"="+value)
}

// formatSignals returns the numbers of sigs, separated by commas.
func formatSignals(sigs []syscall.Signal) string {
	numbers := make([]string, len(sigs))
	for i, sig := range sigs {
		numbers[i] = strconv.Itoa(int(sig))
	}
	return strings.Join(numbers, ",")
}

// parseSignals reads what formatSignals wrote, and keeps what names a signal.
func parseSignals(s string) []syscall.Signal {
	var sigs []syscall.Signal
	for _, number := range strings.Split(s, ",") {
		n, err := strconv.Atoi(number)
		if err == nil && n > 0 && n <= int(signals.RTMax) {
			sigs = append(sigs, syscall.Signal(n))
		}
	}
	return sigs
}

// parseTrampoline reads execVar's value, and reports whether it was made
// for this process: by its parent, from this very file.
func parseTrampoline(value string) (t trampoline, path string, ok bool) {
	fields := strings.SplitN(value, ":", 7)
	own := procfs.ExeID()
	if len(fields) != 7 || fields[0] != strconv.Itoa(os.Getppid()) || own == "" || fields[1]+":"+fields[2] != own {
		return t, "", false
	}
	for _, name := range strings.Split(fields[3], ",") {
		if name != "" {
			t.pidVars = append(t.pidVars, name)
		}
	}
	t.ignore, t.mask = parseSignals(fields[4]), parseSignals(fields[5])
	return t, fields[6], true
}

// Trampoline runs the trampoline when this process is one (see execVar):
// it does what it was given to do and executes COMMAND, and returns only
// when this process is no trampoline. Call it first in main. If COMMAND
// cannot be executed, it exits as reaper would have: 127 or 126, with one
// line on stderr.
func Trampoline() {
	value, ok := os.LookupEnv(execVar)
	if !ok {
		return
	}
	os.Unsetenv(execVar)
	t, path, ok := parseTrampoline(value)
	if !ok {
		return // not started by reaper: a stray variable, ignored
	}
	pid := strconv.Itoa(os.Getpid())
	for _, name := range t.pidVars {
		os.Setenv(name, pid)
	}
	for _, sig := range t.ignore {
		signal.Ignore(sig)
	}
	// The Go runtime unblocked the signals it needs on this thread:
	// COMMAND gets the mask reaper's caller gave reaper.
	runtime.LockOSThread()
	setThreadMask(signals.Sigset(t.mask...))
	err := syscall.Exec(path, os.Args, os.Environ())
	fmt.Fprintf(os.Stderr, "reaper: %s: %v\n", logs.Escape(os.Args[0]), ErrnoOf(err))
	os.Exit(execCode(err))
}
