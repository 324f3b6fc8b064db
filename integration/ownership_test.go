package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// What a run of an instance may signal: the lock's holder only when it
// provably holds the lock now (--replace), a cgroup's processes only when
// the cgroup is an earlier run's of the same lock (the sweep). Each attack
// as the review ran it.

// handOnLock takes the flock on path the way the review did: flock(1) takes
// it through its shell's descriptor and exits at once, and the shell has
// started a process in a session of its own that keeps the descriptor, and
// with it the lock. It returns the pid /proc/locks names (flock's, gone)
// and the one that holds the lock; the holder is killed when the test ends.
func handOnLock(t *testing.T, path string) (named, holder int) {
	t.Helper()
	out, err := exec.Command("sh", "-c", `exec 9>>"$1" && flock -x -n 9 && setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $!`,
		"sh", path).Output()
	if err != nil {
		t.Fatal(err)
	}
	holder, err = strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("the shell wrote %q", out)
	}
	fd, err := unix.PidfdOpen(holder, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); unix.Close(fd) })
	waitExec(t, holder, "sleep")
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	locks, _ := os.ReadFile("/proc/locks")
	for _, line := range strings.Split(string(locks), "\n") {
		f := strings.Fields(line)
		if len(f) >= 6 && f[1] == "FLOCK" && strings.HasSuffix(f[5], ":"+strconv.FormatUint(st.Ino, 10)) {
			named, _ = strconv.Atoi(f[4])
		}
	}
	if named == 0 || named == holder {
		t.Fatalf("/proc/locks names pid %d for %s, want flock's (the holder is %d):\n%s", named, path, holder, locks)
	}
	return named, holder
}

// reusePID starts argv with pid pid, free now, by setting the next pid the
// kernel hands out (kernel.ns_last_pid) and trying again whenever another
// process took it first. It returns nil when pid is taken by a process of
// someone else's; the process is killed when the test ends.
func reusePID(t *testing.T, pid int, argv ...string) *exec.Cmd {
	t.Helper()
	for try := 0; try < 1000; try++ {
		if err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(strconv.Itoa(pid-1)), 0); err != nil {
			skip(t, "cannot choose the next pid: %v", err)
		}
		cmd := exec.Command(argv[0], argv[1:]...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if cmd.Process.Pid == pid {
			t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
			return cmd
		}
		cmd.Process.Kill()
		cmd.Wait()
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			return nil
		}
	}
	return nil
}

// TestReplaceSignalsOnlyTheLockHolder: /proc/locks names the process that
// took a flock, which may have exited and left the lock to a process it
// started. --replace then signals nobody, whether that pid is free or
// another user's innocent process has it now, and says why.
func TestReplaceSignalsOnlyTheLockHolder(t *testing.T) {
	requireRoot(t)
	os.MkdirAll("/run/reaper", 0o700)
	t.Run("holder gone", func(t *testing.T) {
		name := instanceName(t)
		named, holder := handOnLock(t, "/run/reaper/"+name+".lock")
		code, _, stderr := runReaper(t, nil, "--instance="+name, "--replace", "--grace=300s", "true")
		want := fmt.Sprintf("--replace signalled nothing: the process the kernel names as the lock's holder, pid %d, is gone", named)
		// (Unless another process took the freed pid meanwhile: then it
		// holds nothing, as the next case shows.)
		reused := fmt.Sprintf("--replace signalled nothing: pid %d, which the kernel names as the lock's holder, does not hold it now", named)
		if code != 2 || !strings.Contains(stderr, want) && !strings.Contains(stderr, reused) {
			t.Errorf("--replace with the named holder gone: exit %d, %q; want 2 and %q", code, stderr, want)
		}
		if len(running(pidfds(t, []int{holder}), []int{holder})) == 0 {
			t.Error("the process that holds the lock was signalled")
		}
	})
	t.Run("pid reused by another user", func(t *testing.T) {
		for attempt := 0; attempt < 5; attempt++ {
			name := instanceName(t)
			named, holder := handOnLock(t, "/run/reaper/"+name+".lock")
			innocent := reusePID(t, named, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", "sleep", "1000")
			if innocent == nil {
				continue // another process took the pid first: again, with another
			}
			waitExec(t, named, "sleep")
			fds := pidfds(t, []int{named, holder})
			code, _, stderr := runReaper(t, nil, "--instance="+name, "--replace", "--grace=300s", "true")
			want := fmt.Sprintf("--replace signalled nothing: pid %d, which the kernel names as the lock's holder, does not hold it now", named)
			if code != 2 || !strings.Contains(stderr, want) {
				t.Errorf("--replace with the named holder's pid reused: exit %d, %q; want 2 and %q", code, stderr, want)
			}
			if alive := running(fds, []int{named, holder}); len(alive) != 2 {
				t.Errorf("of the innocent process %d and the holder %d, only %v run: --replace signalled them", named, holder, alive)
			}
			return
		}
		skip(t, "other processes took the freed pid first, five times")
	})
}

// nobodysLock returns where nobody's lock of instance name is, once a run
// of nobody's made it, and removes it when the test ends.
func nobodysLock(t *testing.T, name string) string {
	t.Helper()
	if code, out := asNobodyRun(t, nil, bin().reaper, "--instance="+name, "true"); code != 0 {
		t.Fatalf("nobody's first run: %d %s", code, out)
	}
	for _, dir := range []string{"/run/user/65534/reaper", "/tmp/reaper-65534"} {
		path := filepath.Join(dir, name+".lock")
		if _, err := os.Stat(path); err == nil {
			t.Cleanup(func() { os.Remove(path) })
			return path
		}
	}
	t.Fatal("nobody's lock file is nowhere")
	return ""
}

// TestReplaceGivesUpAtOnceOnAnotherUsersHolder: root holds a flock on a
// lock file of nobody's. nobody's --replace cannot show that root's
// process holds it (its descriptors are not nobody's to read), and could
// not signal it anyway: it gives up at once, with exit 2, and says so,
// instead of claiming a kill and waiting out the grace periods.
func TestReplaceGivesUpAtOnceOnAnotherUsersHolder(t *testing.T) {
	requireRoot(t)
	name := instanceName(t)
	path := nobodysLock(t, name)
	holder := startReady(t, "held", "flock", "-x", path, "-c", "echo held; exec sleep 300")
	// With a grace period of 300 s, a run that waits it out meets the
	// test's deadline first.
	code, out := asNobodyRun(t, nil, bin().reaper, "--instance="+name, "--replace", "--grace=300s", "true")
	want := fmt.Sprintf("--replace signalled nothing: pid %d, which the kernel names as the lock's holder, cannot be shown to hold it: "+
		"its open files cannot be read (another user's process)", holder.Process.Pid)
	if code != 2 || !strings.Contains(out, want) || strings.Contains(out, "replacing") || strings.Contains(out, "kill") {
		t.Errorf("nobody's --replace of root's holder: exit %d, %q; want 2 and only %q", code, out, want)
	}
}
