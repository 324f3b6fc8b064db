package main

import (
	"slices"
	"testing"
)

// TestLinkerDefinition: the value of -X runtime.godebugDefault as the
// linker applies -ldflags: split as the go command splits them, value
// flags taking the next argument, the last -X for the symbol winning.
func TestLinkerDefinition(t *testing.T) {
	const sym = "runtime.godebugDefault"
	for _, tc := range []struct {
		ldflags, want string
		found         bool
	}{
		{"-s -w -X=runtime.godebugDefault=asyncpreemptoff=1", "asyncpreemptoff=1", true},
		{"-X runtime.godebugDefault=asyncpreemptoff=1", "asyncpreemptoff=1", true},
		{"--X=runtime.godebugDefault=a=1", "a=1", true},
		// The last one wins.
		{"-X=runtime.godebugDefault=asyncpreemptoff=1 -X=runtime.godebugDefault=asyncpreemptoff=0", "asyncpreemptoff=0", true},
		// Quoted, with white space inside.
		{`-X 'runtime.godebugDefault=a=1 b' -s`, "a=1 b", true},
		{`"-X=runtime.godebugDefault=x=2"`, "x=2", true},
		// Another symbol, or a value flag's argument that looks like -X.
		{"-X=main.version=1", "", false},
		{"-o -X=runtime.godebugDefault=asyncpreemptoff=1", "", false},
		// Flag parsing stops at the first argument that is no flag.
		{"-s foo -X=runtime.godebugDefault=asyncpreemptoff=1", "", false},
		{"-X", "", false},
		{"", "", false},
	} {
		got, found := linkerDefinition(tc.ldflags, sym)
		if got != tc.want || found != tc.found {
			t.Errorf("linkerDefinition(%q) = %q, %v; want %q, %v", tc.ldflags, got, found, tc.want, tc.found)
		}
	}
}

func TestSplitQuoted(t *testing.T) {
	for in, want := range map[string][]string{
		"  a  b\tc ":   {"a", "b", "c"},
		`a 'b c' "d"`:  {"a", "b c", "d"},
		`'x`:           {"x"},
		`"it's" 'a"b'`: {"it's", `a"b`},
		"":             nil,
	} {
		if got := splitQuoted(in); !slices.Equal(got, want) {
			t.Errorf("splitQuoted(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestPreemptOff: GODEBUG wins over the linker's default, its last value
// of the key winning, as the runtime applies them.
func TestPreemptOff(t *testing.T) {
	for _, tc := range []struct {
		godebug, linker string
		want            bool
	}{
		{"", "asyncpreemptoff=1", true},
		{"", "containermaxprocs=0,asyncpreemptoff=1", true},
		{"asyncpreemptoff=0", "asyncpreemptoff=1", false},
		{"asyncpreemptoff=1", "", true},
		{"asyncpreemptoff=1,asyncpreemptoff=0", "", false},
		{"gctrace=1", "", false},
		{"", "", false},
	} {
		if got := preemptOff(tc.godebug, tc.linker); got != tc.want {
			t.Errorf("preemptOff(%q, %q) = %v, want %v", tc.godebug, tc.linker, got, tc.want)
		}
	}
}

// TestParseSaved: the saved state is believed only from the process that
// wrote it (its pid, which an exec keeps).
func TestParseSaved(t *testing.T) {
	s, ok := parseSaved(`42:"reaper":set:gctrace=1`, 42)
	if !ok || s.name != "reaper" || !s.godebugSet || s.godebug != "gctrace=1" {
		t.Errorf("set: %+v, %v", s, ok)
	}
	s, ok = parseSaved(`42:"docker-init":unset`, 42)
	if !ok || s.name != "docker-init" || s.godebugSet {
		t.Errorf("unset: %+v, %v", s, ok)
	}
	for _, bad := range []string{`43:"reaper":unset`, `42:reaper:unset`, `42:"reaper"`, `42:"reaper":other`, ""} {
		if _, ok := parseSaved(bad, 42); ok {
			t.Errorf("parseSaved(%q) was believed", bad)
		}
	}
}

func FuzzLinkerDefinition(f *testing.F) {
	f.Add("-s -w -X=runtime.godebugDefault=asyncpreemptoff=1")
	f.Add(`-X 'runtime.godebugDefault=a b' -X "x"`)
	f.Fuzz(func(t *testing.T, ldflags string) {
		linkerDefinition(ldflags, "runtime.godebugDefault")
		splitQuoted(ldflags)
	})
}
