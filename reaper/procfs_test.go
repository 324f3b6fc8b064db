package reaper

import (
	"bytes"
	"strings"
	"testing"

	"go.uber.org/zap"
)

func TestParseStatOddCommandNames(t *testing.T) {
	rest := " S 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 12345 1000 10 0"
	for _, comm := range []string{"sleep", "a b", "x) S 9 9 9", "((", "new\nline", ")"} {
		data := []byte("77 (" + comm + ")" + rest)
		p, err := ParseStat(data)
		if err != nil {
			t.Fatalf("ParseStat(%q): %v", data, err)
		}
		if p.PID != 77 || p.Comm != comm || p.State != 'S' || p.PPID != 1 || p.PGID != 42 || p.Start != 12345 {
			t.Errorf("ParseStat(%q) = %+v", data, p)
		}
	}
}

func TestParseStatRejectsGarbage(t *testing.T) {
	for _, s := range []string{"", "77", "77 (x", "(x) S 1 2 3", "x (y) S 1 2", "77 (x) SS 1 2 3 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 5",
		"77 (x) S a 2 3 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 5", "-3 (x) S 1 2 3 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 5"} {
		if p, err := ParseStat([]byte(s)); err == nil {
			t.Errorf("ParseStat(%q) = %+v, want an error", s, p)
		}
	}
}

func TestParseChildren(t *testing.T) {
	got, err := ParseChildren([]byte("12 13 4000 \n"))
	if err != nil || len(got) != 3 || got[2] != 4000 {
		t.Errorf("ParseChildren = %v, %v", got, err)
	}
	if got, err := ParseChildren([]byte("")); err != nil || len(got) != 0 {
		t.Errorf("ParseChildren(empty) = %v, %v", got, err)
	}
	if _, err := ParseChildren([]byte("12 x")); err == nil {
		t.Error("ParseChildren accepted a non-number")
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
	log, err := NewLogger(&buf, LogConsole, 2)
	if err != nil {
		t.Fatal(err)
	}
	log.Warn("killed", zap.Int("pid", 42), zap.String("command", "sleep 300"))
	log.Error("x: command not found")
	log.Debug("reaped", zap.Int("pid", 7), zap.String("status", "exit 0"))
	want := `reaper: warning: killed pid=42 command="sleep 300"
reaper: x: command not found
reaper: debug: reaped pid=7 status="exit 0"
`
	if buf.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", buf.String(), want)
	}
	buf.Reset()
	quiet, _ := NewLogger(&buf, LogConsole, 0)
	quiet.Info("started")
	quiet.Debug("reaped")
	if buf.Len() != 0 {
		t.Errorf("verbosity 0 logged %q", buf.String())
	}
	buf.Reset()
	js, _ := NewLogger(&buf, LogJSON, 1)
	js.Info("started", zap.Int("pid", 3))
	if !strings.Contains(buf.String(), `"level":"info"`) || !strings.Contains(buf.String(), `"pid":3`) {
		t.Errorf("json line %q", buf.String())
	}
	if _, err := NewLogger(&buf, "xml", 0); err == nil {
		t.Error("NewLogger accepted format xml")
	}
}
