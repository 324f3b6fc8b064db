package main

import (
	"strings"
	"testing"
)

// FuzzParse feeds the command line and one REAPER_* variable to the parser:
// bad input must give an error value, never a panic.
func FuzzParse(f *testing.F) {
	f.Add("--grace=5s --forward=child -- sleep 1", "REAPER_REWRITE", "TERM:QUIT,HUP:0")
	f.Add("-vv --rewrite=TERM: true", "REAPER_TIMEOUT", "1e309")
	f.Add("--success-exit 300 x", "REAPER_WAIT", "maybe")
	f.Add("--wait-port=0 --instance=../x true", "REAPER_CGROUP", "sideways")
	f.Add("--stop-signal=RTMIN+99 -- --", "REAPER_VERBOSE", "-3")
	f.Fuzz(func(t *testing.T, args, name, value string) {
		parse(strings.Fields(args), env(map[string]string{name: value}))
	})
}

func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"5s", "2.5", "0", "-1", "1e300", "NaN", "Inf", "1h2m3.5s", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if d, err := parseDuration(s); err == nil && d < 0 {
			t.Errorf("parseDuration(%q) = %v", s, d)
		}
	})
}

// FuzzParseTini feeds a tini command line (reaper invoked as tini or
// docker-init) and one TINI_* variable to its parser.
func FuzzParseTini(f *testing.F) {
	f.Add("-s -g -p SIGTERM -- sleep 1", "TINI_VERBOSITY", "2")
	f.Add("-vvv -e 143 -e 0 -w -l cmd", "TINI_KILL_PROCESS_GROUP", "1")
	f.Add("-p -- x", "TINI_SUBREAPER", "")
	f.Add("-e 999 -x --version", "TINI_VERBOSITY", "loud")
	f.Add("-sgp TERM cmd", "", "")
	f.Fuzz(func(t *testing.T, args, name, value string) {
		parseTini(strings.Fields(args), env(map[string]string{name: value}))
	})
}
