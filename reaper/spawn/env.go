package spawn

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/reaper-init/reaper/reaper/logs"
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

// COMMAND's own pid is known only once it is forked, and a variable that
// names it must be in COMMAND's environment when it starts. So reaper then
// forks a copy of itself, the trampoline, which sets those variables to
// its pid and executes COMMAND in its own place: COMMAND keeps the pid,
// and no process is added. The copy is told what to do in execVar, whose
// value is "PPID:DEV:INO:NAME,NAME:PATH": its parent's pid and the device
// and inode of reaper's file (the trampoline checks both against its own
// parent and its own file, which it can always read, so that a stray
// variable cannot make reaper a trampoline), the variables, and COMMAND's
// path. Its argv is COMMAND's.
const execVar = "REAPER_EXEC_WITH_PID"

// trampolineEnv is the environment of the trampoline that starts argv[0]
// at path with the variables vars set to its pid.
func trampolineEnv(env []string, self int, vars []string, path string) []string {
	return append(env, execVar+"="+strconv.Itoa(self)+":"+ownFile()+":"+strings.Join(vars, ",")+":"+path)
}

// ownFile is "DEV:INO" of the running executable, "" when it cannot be
// told.
func ownFile() string {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/exe", &st); err != nil {
		return ""
	}
	return strconv.FormatUint(st.Dev, 10) + ":" + strconv.FormatUint(st.Ino, 10)
}

// Trampoline runs the trampoline when this process is one (see execVar):
// it sets the variables it was given to its own pid and executes COMMAND,
// and returns only when this process is no trampoline. Call it first in
// main. If COMMAND cannot be executed, it exits as reaper would have: 127
// or 126, with one line on stderr.
func Trampoline() {
	value, ok := os.LookupEnv(execVar)
	if !ok {
		return
	}
	os.Unsetenv(execVar)
	fields := strings.SplitN(value, ":", 5)
	own := ownFile()
	if len(fields) != 5 || fields[0] != strconv.Itoa(os.Getppid()) || own == "" || fields[1]+":"+fields[2] != own {
		return // not started by reaper: a stray variable, ignored
	}
	vars, path := fields[3], fields[4]
	pid := strconv.Itoa(os.Getpid())
	for _, name := range strings.Split(vars, ",") {
		if name != "" {
			os.Setenv(name, pid)
		}
	}
	err := syscall.Exec(path, os.Args, os.Environ())
	fmt.Fprintf(os.Stderr, "reaper: %s: %v\n", logs.Escape(os.Args[0]), ErrnoOf(err))
	os.Exit(execCode(err))
}
