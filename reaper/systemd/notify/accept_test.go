package notify

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

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
		if got := Accept(tc.sender, self, child.Process.Pid, true, euid); got != tc.want {
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
		if Accept(cred(gone.Process.Pid, 65534), self, nobody.Process.Pid, true, euid) {
			t.Error("a gone sender of COMMAND's user (nobody) was accepted")
		}
	}
	// Where /proc cannot be walked: COMMAND while it runs, not its pid
	// once it is reaped (cmd 0).
	if !Accept(cred(child.Process.Pid, other), self, child.Process.Pid, false, euid) {
		t.Error("foreign /proc: COMMAND refused")
	}
	if Accept(cred(child.Process.Pid, other), self, 0, false, euid) {
		t.Error("foreign /proc: a process accepted after COMMAND was reaped")
	}
}
