package integration

// When reaper itself is SIGKILLed (a CI runner's cancel, systemd's stop
// timeout under KillMode=process, kill -9), its guardian stops what the
// run left (see reaper/guardian).

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/reaper-init/reaper/integration/itest"
)

// TestGuardianStopsWhatAKilledReaperLeft: SIGKILL of reaper, with COMMAND's
// group, a setsid escapee and a TERM-ignoring one running: its guardian
// kills them all and removes the run's cgroup, in both cgroup modes. With
// --guardian=off they live on (the next --instance start sweeps them).
func TestGuardianStopsWhatAKilledReaperLeft(t *testing.T) {
	for _, mode := range []string{"on", "off"} {
		for _, guarded := range []bool{true, false} {
			name := fmt.Sprintf("cgroup=%s/guardian=%v", mode, guarded)
			t.Run(name, func(t *testing.T) {
				cg := itest.SharedCgroup(t, 256)
				flags := []string{"--cgroup=" + mode}
				if !guarded {
					flags = append(flags, "--guardian=off")
				}
				p := itest.Plant(t, false, itest.Tree{Flags: flags, Ups: 3, Cgroup: cg, Leave: true, Body: `sh -c "$LEAF" &
setsid sh -c "$LEAF" &
setsid sh -c "$STUBBORN" &`})
				fds := itest.Pidfds(t, p.Ups)
				p.Signal(syscall.SIGKILL)
				if r := p.Wait(); r.Signal != int(syscall.SIGKILL) {
					t.Fatalf("reaper: exit %d, want SIGKILL\n%s", r.Status(), r.Stderr)
				}
				if !guarded {
					if alive := itest.Running(fds, p.Ups); len(alive) == 0 {
						t.Error("without a guardian, nothing survived reaper's SIGKILL: the test shows nothing")
					}
					return
				}
				itest.AwaitGone(t, fds, p.Ups)
				// The guardian writes to reaper's stderr, maybe after the
				// harness has exited: the stream goes on.
				p.Stderr.WaitFor(t, regexp.MustCompile(`reaper died before its run's teardown ended`))
				for end := time.Now().Add(itest.Deadline); len(itest.LeafDirs(cg)) > 0; time.Sleep(10 * time.Millisecond) {
					if time.Now().After(end) {
						t.Fatalf("the run's cgroup is left: %v", itest.LeafDirs(cg))
					}
				}
			})
		}
	}
}

// TestGuardianSignalsOnlyTheRun: the guardian of a killed reaper stops
// what carries the run's marker, and nothing else: not a process of
// reaper's user without it, not another user's process that carries it.
func TestGuardianSignalsOnlyTheRun(t *testing.T) {
	itest.RequireRoot(t)
	cg := itest.SharedCgroup(t, 256)
	p := itest.Plant(t, false, itest.Tree{Flags: []string{"--cgroup=off"}, Ups: 1, Cgroup: cg, Leave: true, Body: `setsid sh -c "$LEAF" &`})
	marker := markerOf(t, p.Ups[0])
	stranger := exec.Command("sleep", "300") // reaper's user, no marker
	forger := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sleep", "300")
	forger.Env = append(os.Environ(), marker) // another user's, with the marker
	for _, c := range []*exec.Cmd{stranger, forger} {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Process.Kill(); c.Wait() })
		waitExec(t, c.Process.Pid, "sleep")
	}
	fds := itest.Pidfds(t, p.Ups)
	bystanders := []int{stranger.Process.Pid, forger.Process.Pid}
	bystanderFDs := itest.Pidfds(t, bystanders)
	guardian := []int{guardianOf(t, p.ReaperPID())}
	guardianFD := itest.Pidfds(t, guardian)
	p.Signal(syscall.SIGKILL)
	p.Wait()
	itest.AwaitGone(t, fds, p.Ups)
	// The bystanders are judged once the guardian has ended: its sweep
	// goes on after the run's last process is gone.
	itest.AwaitGone(t, guardianFD, guardian)
	if alive := itest.Running(bystanderFDs, bystanders); len(alive) != 2 {
		t.Errorf("of the bystanders %v, only %v still run", bystanders, alive)
	}
}

// markerOf returns the run's marker (REAPER_INSTANCE=...) from pid's
// environment. The process may be in the middle of an execve, when the
// kernel shows no environment: it reads again until the deadline.
func markerOf(t *testing.T, pid int) string {
	t.Helper()
	for end := time.Now().Add(itest.Deadline); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err != nil {
			t.Fatal(err)
		}
		for _, kv := range strings.Split(string(data), "\x00") {
			if strings.HasPrefix(kv, "REAPER_INSTANCE=") {
				return kv
			}
		}
	}
	t.Fatalf("no REAPER_INSTANCE in %d's environment", pid)
	return ""
}
