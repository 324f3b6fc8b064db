package reaper

import (
	"bytes"
	"strings"
	"testing"
)

func TestParseStatOddCommandNames(t *testing.T) {
	rest := " S 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 12345 1000 10 0"
	for _, comm := range []string{"sleep", "a b", "x) S 9 9 9", "((", "new\nline", ")"} {
		data := []byte("77 (" + comm + ")" + rest)
		p, err := parseStat(data)
		if err != nil {
			t.Fatalf("parseStat(%q): %v", data, err)
		}
		if p.PID != 77 || p.Comm != comm || p.State != 'S' || p.PPID != 1 || p.PGID != 42 || p.Start != 12345 {
			t.Errorf("parseStat(%q) = %+v", data, p)
		}
	}
}

func TestParseStatRejectsGarbage(t *testing.T) {
	for _, s := range []string{"", "77", "77 (x", "(x) S 1 2 3", "x (y) S 1 2", "77 (x) SS 1 2 3 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 5",
		"77 (x) S a 2 3 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 5", "-3 (x) S 1 2 3 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 5"} {
		if p, err := parseStat([]byte(s)); err == nil {
			t.Errorf("parseStat(%q) = %+v, want an error", s, p)
		}
	}
}

func TestParseChildren(t *testing.T) {
	got, err := parseChildren([]byte("12 13 4000 \n"))
	if err != nil || len(got) != 3 || got[2] != 4000 {
		t.Errorf("parseChildren = %v, %v", got, err)
	}
	if got, err := parseChildren([]byte("")); err != nil || len(got) != 0 {
		t.Errorf("parseChildren(empty) = %v, %v", got, err)
	}
	if _, err := parseChildren([]byte("12 x")); err == nil {
		t.Error("parseChildren accepted a non-number")
	}
}

func TestStatusMask(t *testing.T) {
	status := []byte("Name:\tx\nSigBlk:\t0000000000010000\nSigIgn:\t0000000000000001\n")
	if m, ok := statusMask(status, "SigIgn:"); !ok || m != 1 {
		t.Errorf("SigIgn = %x, %v", m, ok)
	}
	if m, ok := statusMask(status, "SigBlk:"); !ok || m != 1<<16 {
		t.Errorf("SigBlk = %x, %v", m, ok)
	}
	if _, ok := statusMask(status, "SigCgt:"); ok {
		t.Error("found a mask that is not there")
	}
}

func TestConsoleLogLines(t *testing.T) {
	var buf bytes.Buffer
	log, err := newLogger(&buf, LogConsole, 2)
	if err != nil {
		t.Fatal(err)
	}
	log.Warn("killed", intField("pid", 42), stringField("command", "sleep 300"))
	log.Error("x: command not found")
	log.Debug("reaped", intField("pid", 7), stringField("status", "exit 0"))
	want := `reaper: warning: killed pid=42 command="sleep 300"
reaper: x: command not found
reaper: debug: reaped pid=7 status="exit 0"
`
	if buf.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", buf.String(), want)
	}
	buf.Reset()
	quiet, _ := newLogger(&buf, LogConsole, 0)
	quiet.Info("started")
	quiet.Debug("reaped")
	if buf.Len() != 0 {
		t.Errorf("verbosity 0 logged %q", buf.String())
	}
	buf.Reset()
	js, _ := newLogger(&buf, LogJSON, 1)
	js.Info("started", intField("pid", 3))
	if !strings.Contains(buf.String(), `"level":"info"`) || !strings.Contains(buf.String(), `"pid":3`) {
		t.Errorf("json line %q", buf.String())
	}
	if _, err := newLogger(&buf, "xml", 0); err == nil {
		t.Error("NewLogger accepted format xml")
	}
}
