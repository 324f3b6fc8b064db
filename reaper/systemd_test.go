package reaper

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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

// TestAcceptSender: a notification is relayed from reaper's descendants;
// from a sender gone before it is read, only when the sender was of
// reaper's user; never from a live process outside the tree, nor from
// another user's gone process, whichever user COMMAND runs as.
func TestAcceptSender(t *testing.T) {
	self := os.Getpid()
	child := exec.Command("sleep", "60")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { child.Process.Kill(); child.Wait() }()
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	euid := os.Geteuid()
	other := uint32(euid + 1)
	cred := func(pid int, uid uint32) unix.Ucred { return unix.Ucred{Pid: int32(pid), Uid: uid} }
	for _, tc := range []struct {
		name   string
		sender unix.Ucred
		want   bool
	}{
		{"a descendant", cred(child.Process.Pid, other), true},
		{"a live process outside the tree", cred(os.Getppid(), uint32(euid)), false},
		{"a gone sender of reaper's user", cred(gone.Process.Pid, uint32(euid)), true},
		{"a gone sender of another user", cred(gone.Process.Pid, other), false},
		{"no pid", cred(0, uint32(euid)), false},
	} {
		if got := acceptSender(tc.sender, self, child.Process.Pid, true, euid); got != tc.want {
			t.Errorf("%s: accepted %v, want %v", tc.name, got, tc.want)
		}
	}
	// COMMAND running as another user (nobody) vouches for no process of
	// that user: anyone else's nobody process could have sent it.
	if euid == 0 {
		nobody := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sleep", "60")
		if err := nobody.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { nobody.Process.Kill(); nobody.Wait() }()
		comm := fmt.Sprintf("/proc/%d/comm", nobody.Process.Pid)
		for end := time.Now().Add(time.Minute); ; time.Sleep(time.Millisecond) { // until setpriv has become nobody's sleep
			if data, _ := os.ReadFile(comm); string(data) == "sleep\n" {
				break
			}
			if time.Now().After(end) {
				t.Fatal("setpriv never ran sleep")
			}
		}
		if acceptSender(cred(gone.Process.Pid, 65534), self, nobody.Process.Pid, true, euid) {
			t.Error("a gone sender of COMMAND's user (nobody) was accepted")
		}
	}
	// Where /proc cannot be walked: COMMAND while it runs, not its pid
	// once it is reaped (cmd 0).
	if !acceptSender(cred(child.Process.Pid, other), self, child.Process.Pid, false, euid) {
		t.Error("foreign /proc: COMMAND refused")
	}
	if acceptSender(cred(child.Process.Pid, other), self, 0, false, euid) {
		t.Error("foreign /proc: a process accepted after COMMAND was reaped")
	}
}
