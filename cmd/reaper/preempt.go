package main

import (
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/reaper-init/reaper/reaper/procfs"
)

// Async preemption makes the Go runtime send SIGURG to its own threads, and
// os/signal cannot tell those from a SIGURG sent by someone else. With it off,
// every SIGURG reaper receives came from outside and is forwarded faithfully.
//
// The runtime reads asyncpreemptoff only at start-up, from GODEBUG or from the
// default the linker wrote. A //go:debug directive or a godebug line in
// go.mod cannot set it (the go command only accepts the settings listed in
// internal/godebugs), so the documented build passes the linker flag below.
// A binary built without it (go install, go build) re-executes itself once
// at start-up with GODEBUG=asyncpreemptoff=1. Nothing of that shows: the
// process keeps its pid, its argv and its name (/proc/PID/comm, which ps,
// pgrep and top show), and COMMAND gets the caller's GODEBUG.
//
// The documented build, in README.md, the Dockerfile and the tests:
//
//	go build -ldflags="-s -w -X=runtime.godebugDefault=asyncpreemptoff=1,containermaxprocs=0,updatemaxprocs=0" ./cmd/reaper
//
// The linker value replaces the defaults the go command derives from
// //go:debug lines, so it repeats those of main.go.

// savedState carries across the re-execution what it would change: the
// caller's GODEBUG and reaper's name. Its value is PID:"NAME":unset or
// PID:"NAME":set:GODEBUG, NAME quoted as Go quotes strings; the pid, which
// an exec keeps, ties it to the one process that wrote it.
const savedState = "REAPER_SAVED_GODEBUG"

// ensurePreemptOff re-executes reaper with async preemption off when it is
// on, and restores what the re-execution changed. It returns only when async
// preemption is off, or cannot be turned off. What the runtime read at
// start-up decides, never the saved state: a caller's REAPER_SAVED_GODEBUG
// cannot leave preemption on.
func ensurePreemptOff() {
	saved, hasSaved := os.LookupEnv(savedState)
	os.Unsetenv(savedState) // never COMMAND's
	state, ours := parseSaved(saved, os.Getpid())
	godebug, godebugSet := os.LookupEnv("GODEBUG")
	if preemptOff(godebug, linkerGodebug()) {
		if hasSaved && ours {
			state.restore()
		}
		return
	}
	// Not off, whatever the saved state says: a re-execution always is (its
	// GODEBUG ends with asyncpreemptoff=1), so a state that names this pid
	// was made by the caller, and is no reason to stay as it is.
	saved = strconv.Itoa(os.Getpid()) + ":" + strconv.Quote(ownName()) + ":unset"
	next := "asyncpreemptoff=1"
	if godebugSet {
		saved = strings.TrimSuffix(saved, "unset") + "set:" + godebug
		if godebug != "" {
			next = godebug + "," + next
		}
	}
	env := make([]string, 0, len(os.Environ())+2)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GODEBUG=") {
			env = append(env, kv)
		}
	}
	env = append(env, savedState+"="+saved, "GODEBUG="+next)
	// Exec only returns on failure; reaper then runs with preemption on.
	syscall.Exec(selfPath(), os.Args, env)
}

// saved is what a re-execution carries.
type saved struct {
	name       string
	godebug    string
	godebugSet bool
}

// parseSaved reads a savedState value and reports whether process pid
// wrote it.
func parseSaved(value string, pid int) (saved, bool) {
	owner, rest, ok := strings.Cut(value, ":")
	if !ok || owner != strconv.Itoa(pid) {
		return saved{}, false
	}
	quoted, err := strconv.QuotedPrefix(rest)
	if err != nil {
		return saved{}, false
	}
	name, _ := strconv.Unquote(quoted)
	godebug, ok := strings.CutPrefix(rest[len(quoted):], ":")
	if !ok {
		return saved{}, false
	}
	if godebug == "unset" {
		return saved{name: name}, true
	}
	value, set := strings.CutPrefix(godebug, "set:")
	return saved{name: name, godebug: value, godebugSet: true}, set
}

// restore gives COMMAND the caller's GODEBUG (the runtime keeps
// asyncpreemptoff: it reads it once), and reaper its name back.
func (s saved) restore() {
	if s.godebugSet {
		os.Setenv("GODEBUG", s.godebug)
	} else {
		os.Unsetenv("GODEBUG")
	}
	setOwnName(s.name)
}

// ownName returns the process's name (comm): what the kernel took from the
// path it was executed as, a symlink's name included (docker-init, tini).
func ownName() string {
	data, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(string(data), "\n")
}

// setOwnName names every thread of the process name, when the
// re-execution gave them another (a path whose last element differs, such
// as /proc/self/exe's "exe"). /proc/PID/comm is the main thread's; the
// threads the runtime started before main are renamed too.
func setOwnName(name string) {
	if name == "" || ownName() == name {
		return
	}
	procfs.NameThreads(name)
}

// selfPath is the path to execute reaper again: the path of its own file,
// so that the new image keeps reaper's name, when it still names the file
// that runs (the same device and inode); /proc/self/exe otherwise (the file
// was replaced or deleted since).
func selfPath() string {
	const self = "/proc/self/exe"
	path, err := os.Readlink(self)
	if err != nil || !filepath.IsAbs(path) {
		return self
	}
	var running, named unix.Stat_t
	if unix.Stat(self, &running) != nil || unix.Stat(path, &named) != nil ||
		running.Dev != named.Dev || running.Ino != named.Ino {
		return self
	}
	return path
}

// preemptOff reports whether async preemption is off, given GODEBUG and the
// linker's default. GODEBUG wins: the runtime applies it after the default.
func preemptOff(godebug, linkerDefault string) bool {
	if v, ok := godebugValue(godebug, "asyncpreemptoff"); ok {
		return v == "1"
	}
	v, ok := godebugValue(linkerDefault, "asyncpreemptoff")
	return ok && v == "1"
}

// linkerGodebug returns the runtime's godebug default the build set with
// -X, as recorded in the build information ("" when none). -trimpath
// strips -ldflags from it: such a build re-executes.
func linkerGodebug() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	for _, s := range info.Settings {
		if s.Key == "-ldflags" {
			v, _ := linkerDefinition(s.Value, "runtime.godebugDefault")
			return v
		}
	}
	return ""
}

// godebugValue returns the last value of key in a GODEBUG string, as the
// runtime applies them at start-up: left to right, the last one winning.
func godebugValue(godebug, key string) (string, bool) {
	value, found := "", false
	for _, field := range strings.Split(godebug, ",") {
		if k, v, ok := strings.Cut(field, "="); ok && k == key {
			value, found = v, true
		}
	}
	return value, found
}

// linkerValueFlags are the linker's flags that take a value: written
// without "=", the next argument is theirs, even one that looks like -X.
var linkerValueFlags = map[string]bool{
	"B": true, "D": true, "E": true, "H": true, "I": true, "L": true, "R": true, "T": true, "X": true,
	"benchmark": true, "benchmarkprofile": true, "buildid": true, "buildmode": true, "capturehostobjs": true,
	"cpuprofile": true, "debugtextsize": true, "debugtramp": true, "extar": true, "extld": true,
	"extldflags": true, "fipso": true, "funcalign": true, "importcfg": true, "installsuffix": true,
	"k": true, "libgcc": true, "linkmode": true, "memprofile": true, "memprofilerate": true, "o": true,
	"pluginpath": true, "r": true, "randlayout": true, "strictdups": true, "tmpdir": true,
}

// linkerDefinition returns the value the linker gives symbol, given the
// -ldflags of a build: the go command splits them into arguments as
// cmd/internal/quoted does (white space, and single or double quotes
// around an argument), and the linker's flag parsing applies each
// -X symbol=value in turn, the last one for a symbol winning.
func linkerDefinition(ldflags, symbol string) (string, bool) {
	args := splitQuoted(ldflags)
	value, found := "", false
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if len(arg) < 2 || arg[0] != '-' || arg == "--" {
			break // flag parsing stops at the first argument that is no flag
		}
		name, v, hasValue := strings.Cut(strings.TrimPrefix(arg[1:], "-"), "=")
		if !linkerValueFlags[name] {
			continue
		}
		if !hasValue {
			if i+1 == len(args) {
				break
			}
			i++
			v = args[i]
		}
		if sym, def, ok := strings.Cut(v, "="); name == "X" && ok && sym == symbol {
			value, found = def, true
		}
	}
	return value, found
}

// splitQuoted splits s into arguments at white space; a single- or
// double-quoted run is one argument, without its quotes and with no escape
// processing (cmd/internal/quoted.Split).
func splitQuoted(s string) []string {
	var args []string
	for {
		s = strings.TrimLeft(s, " \t\n\r")
		if s == "" {
			return args
		}
		if q := s[0]; q == '\'' || q == '"' {
			if end := strings.IndexByte(s[1:], q); end >= 0 {
				args = append(args, s[1:1+end])
				s = s[2+end:]
				continue
			}
			// An unterminated quote: the go command refuses the flags;
			// take the rest as one argument.
			return append(args, s[1:])
		}
		end := strings.IndexAny(s, " \t\n\r")
		if end < 0 {
			return append(args, s)
		}
		args = append(args, s[:end])
		s = s[end:]
	}
}
