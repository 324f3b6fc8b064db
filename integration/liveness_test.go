package integration

import (
	"os/exec"
	"strings"
	"testing"
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
		skip(t, "python3 is not installed (apt-get install python3): %v", err)
	}
	bothWalks(t, func(t *testing.T, pid1 bool, cgroupFlag string) {
		p := plant(t, pid1, tree{flags: []string{cgroupFlag, "--grace=30s"}, ups: 1, body: leaderExits})
		waitState(t, p.hostPIDAnywhere(t, p.ups[0]), 'Z')
		p.release(t)
		r := p.wait()
		p.expectClean(t, r, 0)
		for _, d := range p.readReport(t).Teardown.Descendants {
			if d.PID == p.ups[0] && d.Signal != "SIGTERM" {
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
	requireRoot(t)
	if _, err := exec.LookPath("strace"); err != nil {
		skip(t, "strace is not installed (apt-get install strace): %v", err)
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
			s := start(t, opts{command: []string{"strace", "-f", "-qq", "-o", "/dev/null",
				"-e", "inject=clone3:error=" + tc.errno, bin().reaper, "-v", tc.flag, "sh", "-c", "exit 5"}})
			r := s.wait()
			if r.status() != tc.code || !strings.Contains(r.Stderr, tc.says) || r.leftovers() != "" {
				t.Errorf("exit %d, want %d and %q in:\n%s\nleft %s", r.status(), tc.code, tc.says, r.Stderr, r.leftovers())
			}
			if tc.code == 5 && strings.Contains(r.Stderr, "contained") {
				t.Errorf("says it contained COMMAND:\n%s", r.Stderr)
			}
		})
	}
	// Without the injection, the same run is contained.
	r := start(t, opts{args: []string{"-v", "--cgroup=on", "sh", "-c", "exit 5"}}).wait()
	if r.status() != 5 || !strings.Contains(r.Stderr, "info: contained") {
		t.Errorf("exit %d, want 5 and contained:\n%s", r.status(), r.Stderr)
	}
}
