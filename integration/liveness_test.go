package integration

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/reaper-init/reaper/integration/itest"
)

// leaderExits is a payload whose main thread exits while a second thread
// runs on: /proc/PID/stat then says Z for a process that lives. It
// announces itself on $F first.
const leaderExits = `python3 -c 'import ctypes, os, threading, time
threading.Thread(target=time.sleep, args=(300,)).start()
with open(os.environ["F"], "w") as f:
    f.write("up %d\n" % os.getpid())
ctypes.CDLL(None).pthread_exit(None)' &`

// TestTeardownReachesAProcessWhoseLeaderExited: such a process is alive,
// and gets the stop signal like any other (it dies of it: SIGTERM's default
// ends every thread), in both walks.
func TestTeardownReachesAProcessWhoseLeaderExited(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		itest.Skip(t, "python3 is not installed (apt-get install python3): %v", err)
	}
	bothWalks(t, func(t *testing.T, pid1 bool, cgroupFlag string) {
		p := itest.Plant(t, pid1, itest.Tree{Flags: []string{cgroupFlag, "--grace=30s"}, Ups: 1, Body: leaderExits})
		waitState(t, p.HostPIDAnywhere(t, p.Ups[0]), 'Z')
		p.Release(t)
		r := p.Wait()
		p.ExpectClean(t, r, 0)
		for _, d := range p.ReadReport(t).Teardown.Descendants {
			if d.PID == p.Ups[0] && d.Signal != "SIGTERM" {
				t.Errorf("the process whose leader exited got %q first, want SIGTERM", d.Signal)
			}
		}
	})
}

// TestCgroupFallsBackWhenClone3RefusesIt: on Linux 5.3 to 5.6, clone3
// answers E2BIG to the CLONE_INTO_CGROUP that Go's fork asks for (ENOSYS
// before 5.3). strace injects that answer: with --cgroup=auto reaper starts
// COMMAND outside the cgroup and exits with its status; with --cgroup=on it
// fails with 125.
func TestCgroupFallsBackWhenClone3RefusesIt(t *testing.T) {
	itest.RequireRoot(t)
	if _, err := exec.LookPath("strace"); err != nil {
		itest.Skip(t, "strace is not installed (apt-get install strace): %v", err)
	}
	for _, tc := range []struct {
		errno, flag string
		code        int
		says        string
	}{
		{"E2BIG", "--cgroup=auto", 5, "info: cgroup containment off"},
		{"ENOSYS", "--cgroup=auto", 5, "info: cgroup containment off"},
		{"E2BIG", "--cgroup=on", 125, "cannot start a process in a cgroup"},
	} {
		t.Run(tc.errno+tc.flag, func(t *testing.T) {
			s := itest.Start(t, itest.Opts{Command: []string{"strace", "-f", "-qq", "-o", "/dev/null",
				"-e", "inject=clone3:error=" + tc.errno, itest.Bin().Reaper, "-v", tc.flag, "sh", "-c", "exit 5"}})
			r := s.Wait()
			if r.Status() != tc.code || !strings.Contains(r.Stderr, tc.says) || r.Leftovers() != "" {
				t.Errorf("exit %d, want %d and %q in:\n%s\nleft %s", r.Status(), tc.code, tc.says, r.Stderr, r.Leftovers())
			}
			if tc.code == 5 && strings.Contains(r.Stderr, "contained") {
				t.Errorf("says it contained COMMAND:\n%s", r.Stderr)
			}
		})
	}
	// Without the injection, the same run is contained.
	r := itest.Start(t, itest.Opts{Args: []string{"-v", "--cgroup=on", "sh", "-c", "exit 5"}}).Wait()
	if r.Status() != 5 || !strings.Contains(r.Stderr, "info: contained") {
		t.Errorf("exit %d, want 5 and contained:\n%s", r.Status(), r.Stderr)
	}
}
