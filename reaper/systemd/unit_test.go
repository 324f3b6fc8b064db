package systemd

import (
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParseTimespan(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"1min 30s":  90 * time.Second,
		"90s":       90 * time.Second,
		"2.500000s": 2500 * time.Millisecond,
		"2.500s":    2500 * time.Millisecond,
		"100ms":     100 * time.Millisecond,
		"250us":     250 * time.Microsecond,
		"1h 2min":   62 * time.Minute,
		"1d 12h":    36 * time.Hour,
		"1w":        7 * 24 * time.Hour,
		"1month":    2629800 * time.Second,
		"1y 1s":     31557601 * time.Second,
		"0":         0,
		"5":         5 * time.Second,
		"infinity":  0,
	} {
		if got, err := parseTimespan(in); err != nil || got != want {
			t.Errorf("parseTimespan(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "soon", "5 parsecs", "1min x", "-5s", "1..5s", "s"} {
		if got, err := parseTimespan(in); err == nil {
			t.Errorf("parseTimespan(%q) = %v, want an error", in, got)
		}
	}
}

func TestUnitFromCgroup(t *testing.T) {
	for _, tc := range []struct {
		cgroup string
		unit   string
		user   bool
	}{
		{"0::/system.slice/web.service\n", "web.service", false},
		{"0::/system.slice/web.service/reaper-instance-x\n", "web.service", false},
		{"0::/system.slice/web.service/supervisor\n", "web.service", false},
		{"0::/user.slice/user-1000.slice/user@1000.service/app.slice/web.service\n", "web.service", true},
		{"0::/user.slice/user-1000.slice/session-3.scope\n", "session-3.scope", false},
		// hybrid layout: systemd tracks units in name=systemd
		{"12:pids:/system.slice/web.service\n1:name=systemd:/system.slice/web.service\n0::/\n", "web.service", false},
		{"1:name=systemd:/system.slice/web.service\n0::/system.slice/other.service\n", "web.service", false},
		{"0::/\n", "", false},
		{"", "", false},
		{"0::/docker/0123abcd\n", "", false},
	} {
		unit, user := unitFromCgroup(tc.cgroup)
		if unit != tc.unit || user != tc.user {
			t.Errorf("unitFromCgroup(%q) = %q %v, want %q %v", tc.cgroup, unit, user, tc.unit, tc.user)
		}
	}
}

func TestOutputWaitsForItsChildAlone(t *testing.T) {
	out, err := output("/bin/sh", []string{"sh", "-c", "echo 1min 30s; echo ignored >&2"}, 10*time.Second)
	if err != nil || out != "1min 30s\n" {
		t.Errorf("output = %q, %v", out, err)
	}
	if _, err := output("/bin/sh", []string{"sh", "-c", "exit 1"}, 10*time.Second); err == nil {
		t.Error("a failing program gave no error")
	}
	began := time.Now()
	if _, err := output("/bin/sh", []string{"sh", "-c", "exec sleep 30"}, 100*time.Millisecond); err == nil {
		t.Error("a program that outlived the wait gave no error")
	}
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("output took %v after its wait of 100ms", took)
	}
	if _, err := output("/nonexistent/systemctl", []string{"systemctl"}, time.Second); err == nil ||
		!strings.Contains(err.Error(), "systemctl") {
		t.Errorf("a missing program: %v", err)
	}
}

// TestOutputHasADeadline runs a program that closes its stdout and goes on:
// output must return within its bound, and leave no child behind.
func TestOutputHasADeadline(t *testing.T) {
	began := time.Now()
	_, err := output("/bin/sh", []string{"sh", "-c", "exec >&-; exec sleep 100"}, 200*time.Millisecond)
	if err == nil {
		t.Fatal("output of a program that never exits: no error")
	}
	if took := time.Since(began); took > time.Minute {
		t.Errorf("output took %v", took)
	}
	var ws syscall.WaitStatus
	if _, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil); !errors.Is(err, syscall.ECHILD) {
		t.Errorf("a child is left: %v", err)
	}
	out, err := output("/bin/sh", []string{"sh", "-c", "echo 90s"}, time.Minute)
	if err != nil || out != "90s\n" {
		t.Errorf("output = %q, %v", out, err)
	}
}
