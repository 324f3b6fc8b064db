package main

import (
	"os"
	"runtime/debug"
	"strings"
	"syscall"
)

// Async preemption makes the Go runtime send SIGURG to its own threads, and
// os/signal cannot tell those from a SIGURG sent by someone else. With it off,
// every SIGURG reaper receives came from outside and is forwarded faithfully.
//
// The runtime reads asyncpreemptoff only at start-up, from GODEBUG or from the
// default the linker wrote. A //go:debug directive cannot set it (the go
// command only accepts the settings listed in internal/godebugs), so every
// documented build passes PreemptOffLdflags. A binary built without it
// re-executes itself once with GODEBUG=asyncpreemptoff=1, and COMMAND still
// gets the caller's GODEBUG.

// The documented build, in README.md, the Dockerfile and the tests:
//
//	go build -ldflags="-s -w -X=runtime.godebugDefault=asyncpreemptoff=1,containermaxprocs=0,updatemaxprocs=0" ./cmd/reaper
//
// The linker value replaces the defaults the go command derives from
// //go:debug lines, so it repeats those of main.go.

// savedGodebug carries the caller's GODEBUG across the re-execution:
// "unset", or "set:" and the value.
const savedGodebug = "REAPER_SAVED_GODEBUG"

// ensurePreemptOff re-executes reaper with async preemption off when it is
// on, and restores the caller's GODEBUG after such a re-execution. It returns
// only when async preemption is off, or cannot be turned off.
func ensurePreemptOff() {
	if saved, ok := os.LookupEnv(savedGodebug); ok {
		os.Unsetenv(savedGodebug)
		if value, set := strings.CutPrefix(saved, "set:"); set {
			os.Setenv("GODEBUG", value) // the runtime keeps asyncpreemptoff: it reads it once
		} else {
			os.Unsetenv("GODEBUG")
		}
		return
	}
	if preemptOff(os.Getenv("GODEBUG")) {
		return
	}
	old, set := os.LookupEnv("GODEBUG")
	saved := "unset"
	godebug := "asyncpreemptoff=1"
	if set {
		saved = "set:" + old
		if old != "" {
			godebug = old + "," + godebug
		}
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GODEBUG=") {
			env = append(env, kv)
		}
	}
	env = append(env, savedGodebug+"="+saved, "GODEBUG="+godebug)
	// Exec only returns on failure; reaper then runs with preemption on.
	syscall.Exec("/proc/self/exe", os.Args, env)
}

// preemptOff reports whether async preemption is off, given GODEBUG and the
// linker default recorded in the build information. GODEBUG wins.
func preemptOff(godebug string) bool {
	if v, ok := godebugValue(godebug, "asyncpreemptoff"); ok {
		return v == "1"
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range info.Settings {
		if s.Key != "-ldflags" {
			continue
		}
		_, def, found := strings.Cut(s.Value, "runtime.godebugDefault=")
		if !found {
			return false
		}
		def, _, _ = strings.Cut(strings.Trim(def, `"'`), " ")
		v, ok := godebugValue(strings.Trim(def, `"'`), "asyncpreemptoff")
		return ok && v == "1"
	}
	return false
}

// godebugValue returns the last value of key in a GODEBUG string.
func godebugValue(godebug, key string) (string, bool) {
	value, found := "", false
	for _, field := range strings.Split(godebug, ",") {
		if k, v, ok := strings.Cut(strings.TrimSpace(field), "="); ok && k == key {
			value, found = v, true
		}
	}
	return value, found
}
