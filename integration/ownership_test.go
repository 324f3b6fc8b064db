package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/reaper-init/reaper/integration/itest"
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
			itest.Skip(t, "cannot choose the next pid: %v", err)
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
	itest.RequireRoot(t)
	os.MkdirAll("/run/reaper", 0o700)
	t.Run("holder gone", func(t *testing.T) {
		name := itest.InstanceName(t)
		named, holder := handOnLock(t, "/run/reaper/"+name+".lock")
		code, _, stderr := itest.RunReaper(t, nil, "--instance="+name, "--replace", "--grace=300s", "true")
		want := fmt.Sprintf("--replace signalled nothing: the process the kernel names as the lock's holder, pid %d, is gone", named)
		// (Unless another process took the freed pid meanwhile: then it
		// holds nothing, as the next case shows.)
		reused := fmt.Sprintf("--replace signalled nothing: pid %d, which the kernel names as the lock's holder, does not hold it now", named)
		if code != 2 || !strings.Contains(stderr, want) && !strings.Contains(stderr, reused) {
			t.Errorf("--replace with the named holder gone: exit %d, %q; want 2 and %q", code, stderr, want)
		}
		if len(itest.Running(itest.Pidfds(t, []int{holder}), []int{holder})) == 0 {
			t.Error("the process that holds the lock was signalled")
		}
	})
	t.Run("pid reused by another user", func(t *testing.T) {
		for attempt := 0; attempt < 5; attempt++ {
			name := itest.InstanceName(t)
			named, holder := handOnLock(t, "/run/reaper/"+name+".lock")
			innocent := reusePID(t, named, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", "sleep", "1000")
			if innocent == nil {
				continue // another process took the pid first: again, with another
			}
			waitExec(t, named, "sleep")
			fds := itest.Pidfds(t, []int{named, holder})
			code, _, stderr := itest.RunReaper(t, nil, "--instance="+name, "--replace", "--grace=300s", "true")
			want := fmt.Sprintf("--replace signalled nothing: pid %d, which the kernel names as the lock's holder, does not hold it now", named)
			if code != 2 || !strings.Contains(stderr, want) {
				t.Errorf("--replace with the named holder's pid reused: exit %d, %q; want 2 and %q", code, stderr, want)
			}
			if alive := itest.Running(fds, []int{named, holder}); len(alive) != 2 {
				t.Errorf("of the innocent process %d and the holder %d, only %v run: --replace signalled them", named, holder, alive)
			}
			return
		}
		itest.Skip(t, "other processes took the freed pid first, five times")
	})
}

// nobodysLock returns where nobody's lock of instance name is, once a run
// of nobody's made it, and removes it when the test ends.
func nobodysLock(t *testing.T, name string) string {
	t.Helper()
	if code, out := itest.AsNobodyRun(t, nil, itest.Bin().Reaper, "--instance="+name, "true"); code != 0 {
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
	itest.RequireRoot(t)
	name := itest.InstanceName(t)
	path := nobodysLock(t, name)
	holder := startReady(t, "held", "flock", "-x", path, "-c", "echo held; exec sleep 300")
	// With a grace period of 300 s, a run that waits it out meets the
	// test's deadline first.
	code, out := itest.AsNobodyRun(t, nil, itest.Bin().Reaper, "--instance="+name, "--replace", "--grace=300s", "true")
	want := fmt.Sprintf("--replace signalled nothing: pid %d, which the kernel names as the lock's holder, cannot be shown to hold it: "+
		"its open files cannot be read (another user's process)", holder.Process.Pid)
	if code != 2 || !strings.Contains(out, want) || strings.Contains(out, "replacing") || strings.Contains(out, "kill") {
		t.Errorf("nobody's --replace of root's holder: exit %d, %q; want 2 and only %q", code, out, want)
	}
}

// privateRun starts a mount namespace of the test's with a /run of its own
// (a tmpfs), as a container or a unit with a private /run has, and returns
// the command line that runs a program in it.
func privateRun(t *testing.T) []string {
	t.Helper()
	cmd := startReady(t, "ready", "unshare", "--mount", "--propagation", "private", "--",
		"sh", "-c", "mount -t tmpfs tmpfs /run && echo ready && exec sleep 1000")
	return []string{"nsenter", "-t", strconv.Itoa(cmd.Process.Pid), "--mount", "--"}
}

// conflictWarning is the line of a run that leaves another run's cgroup of
// its instance's name alone.
func conflictWarning(name, madeBy string) *regexp.Regexp {
	return regexp.MustCompile(`warning: the instance's cgroup is another run's, which this run cannot prove ended .* instance=` +
		regexp.QuoteMeta(name) + ` cgroup=\S*/reaper-instance-` + regexp.QuoteMeta(name) + ` made_by="` + madeBy +
		`[^"]*" own=reaper-instance-` + regexp.QuoteMeta(name) + `\+[0-9a-f]{8}`)
}

// expectUntouched fails the test unless the live run of record's COMMAND
// still forwards signals to it and has seen none but the test's: then
// stops it.
func expectUntouched(t *testing.T, live *itest.Session, rec *itest.FIFO) {
	t.Helper()
	live.Signal(syscall.SIGUSR1)
	if got := rec.Next(t); got != "SIGUSR1" {
		t.Errorf("the live run's COMMAND recorded %s, want the test's SIGUSR1: another run signalled it", got)
	}
	live.Signal(syscall.SIGTERM)
	if r := live.Wait(); r.Status() != 0 {
		t.Errorf("the live run: exit %d, want 0 (its COMMAND's, after the test's SIGTERM)\n%s", r.Status(), r.Stderr)
	}
}

// TestRunsOfOneNameUnderTwoLocks: two root runs of one name from one
// cgroup, one in a mount namespace with a /run of its own, hold two locks.
// Neither sweeps the other's cgroup, whichever started first: the second
// leaves the first's alone, runs in a cgroup of its own, and says so; a
// later run under the second's lock sweeps the second's leftovers from
// that cgroup (a leftover without the marker: only the cgroup finds it),
// and still nothing of the first.
func TestRunsOfOneNameUnderTwoLocks(t *testing.T) {
	itest.RequireRoot(t)
	for _, privateFirst := range []bool{false, true} {
		t.Run(map[bool]string{false: "host first", true: "private /run first"}[privateFirst], func(t *testing.T) {
			cg := itest.SharedCgroup(t, 256)
			name := itest.InstanceName(t)
			private := privateRun(t)
			live, other := []string(nil), private
			if privateFirst {
				live, other = private, nil
			}
			rec := itest.NewFIFO(t, "live")
			first := itest.Start(t, itest.Opts{Cgroup: cg, Prefix: live, Args: []string{"--instance=" + name, "--cgroup=on", itest.Bin().Helper, "record", rec.Path}})
			rec.Ready(t)

			second := itest.Plant(t, false, itest.Tree{Prefix: other, Flags: []string{"--instance=" + name, "--cgroup=on", "--guardian=off"}, Ups: 1, Cgroup: cg, Leave: true,
				Body: `setsid env -i F="$F" sh -c 'echo "up $$" > "$F"; exec sleep 300' &`})
			left := itest.Pidfds(t, second.Ups)
			second.Signal(syscall.SIGKILL)
			r := second.Wait()
			if !conflictWarning(name, "a run under another lock").MatchString(r.Stderr) {
				t.Errorf("the second run does not say it left the first's cgroup alone:\n%s", r.Stderr)
			}
			if alive := itest.Running(left, second.Ups); len(alive) != 1 {
				t.Fatalf("the killed second run's leftover is gone: %v; the test needs it", alive)
			}

			r = itest.Start(t, itest.Opts{Cgroup: cg, Prefix: other, Args: []string{"--instance=" + name, "--cgroup=on", "--grace=1s", "sh", "-c", "exit 7"}}).Wait()
			if r.Status() != 7 || !conflictWarning(name, "a run under another lock").MatchString(r.Stderr) {
				t.Errorf("third run: exit %d (want 7), and a warning naming the conflict:\n%s", r.Status(), r.Stderr)
			}
			if !strings.Contains(r.Stderr, fmt.Sprintf("leftover of an earlier run instance=%s pid=%d ", name, second.Ups[0])) {
				t.Errorf("the third run does not name its own lock's leftover %d:\n%s", second.Ups[0], r.Stderr)
			}
			if alive := itest.Running(left, second.Ups); len(alive) > 0 {
				t.Errorf("the second run's leftover %v still runs", alive)
			}
			if strings.Count(r.Stderr, "leftover of an earlier run") != 1 {
				t.Errorf("the third run took more than its own lock's leftover for one:\n%s", r.Stderr)
			}
			expectUntouched(t, first, rec)
			if leaves, _ := filepath.Glob(filepath.Join(cg.V2, "reaper-instance-*")); len(leaves) > 0 {
				t.Errorf("cgroups left behind: %v", leaves)
			}
		})
	}
}

// delegate gives cg to nobody, as systemd's Delegate=yes gives a unit's
// cgroup to its user: nobody may make groups in it and start processes
// in them.
func delegate(t *testing.T, cg *itest.Cgroup) {
	t.Helper()
	for _, path := range []string{cg.V2, cg.V2 + "/cgroup.procs"} {
		if err := os.Chown(path, 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRunsOfOneNameOfTwoUsers: root's run and nobody's run of one name,
// from one cgroup, hold two locks: neither sweeps the other's cgroup,
// whichever is live, and no line claims a leftover found or killed.
func TestRunsOfOneNameOfTwoUsers(t *testing.T) {
	nobody := itest.AsNobody(t)
	for _, rootLive := range []bool{true, false} {
		t.Run(map[bool]string{true: "root's run live", false: "nobody's run live"}[rootLive], func(t *testing.T) {
			cg := itest.SharedCgroup(t, 256)
			delegate(t, cg)
			name := itest.InstanceName(t)
			nobodysLock(t, name)
			root := []string{itest.Bin().Reaper}
			liveShim, otherShim, otherUID := root, nobody, 0
			if !rootLive {
				liveShim, otherShim, otherUID = nobody, root, 65534
			}
			rec := itest.NewFIFO(t, "live")
			first := itest.Start(t, itest.Opts{Cgroup: cg, Command: append(append([]string{}, liveShim...),
				"--instance="+name, "--cgroup=on", itest.Bin().Helper, "record", rec.Path)})
			rec.Ready(t)
			r := itest.Start(t, itest.Opts{Cgroup: cg, Command: append(append([]string{}, otherShim...),
				"--instance="+name, "--grace=1s", "sh", "-c", "exit 7")}).Wait()
			if r.Status() != 7 || !conflictWarning(name, "a run of user "+strconv.Itoa(otherUID)).MatchString(r.Stderr) {
				t.Errorf("the other user's run: exit %d (want 7), and a warning naming the conflict:\n%s", r.Status(), r.Stderr)
			}
			if strings.Contains(r.Stderr, "leftover") {
				t.Errorf("the other user's run claims leftovers:\n%s", r.Stderr)
			}
			expectUntouched(t, first, rec)
		})
	}
}

// TestSweepSaysWhatItCouldNotSignal: nobody's earlier run left, in its
// cgroup, a process of its own and one of root's (as a COMMAND's sudo
// would). nobody's next run signals its own, and says that it did not
// signal root's, and why; the cgroup's kill, which the kernel allows the
// cgroup's owner, ends root's, and the run says so.
func TestSweepSaysWhatItCouldNotSignal(t *testing.T) {
	nobody := itest.AsNobody(t)
	cg := itest.SharedCgroup(t, 256)
	delegate(t, cg)
	name := itest.InstanceName(t)
	nobodysLock(t, name)
	first := itest.Plant(t, false, itest.Tree{Shim: append(append([]string{}, nobody...), "--instance="+name, "--cgroup=on", "--guardian=off"), Ups: 1,
		Cgroup: cg, Leave: true, Body: `setsid sh -c "$LEAF" &`})
	left := itest.Pidfds(t, first.Ups)
	first.Signal(syscall.SIGKILL)
	first.Wait()
	sudo := exec.Command("sleep", "300")
	if err := sudo.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sudo.Process.Kill(); sudo.Wait() })
	leaf := filepath.Join(cg.V2, "reaper-instance-"+name)
	if err := os.WriteFile(leaf+"/cgroup.procs", []byte(strconv.Itoa(sudo.Process.Pid)), 0); err != nil {
		t.Fatal(err)
	}
	r := itest.Start(t, itest.Opts{Cgroup: cg, Command: append(append([]string{}, nobody...), "--instance="+name, "--cgroup=on", "--grace=1s", "true")}).Wait()
	if r.Status() != 0 {
		t.Errorf("nobody's second run: exit %d\n%s", r.Status(), r.Stderr)
	}
	for _, want := range []string{
		fmt.Sprintf("warning: leftover of an earlier run instance=%s pid=%d ", name, first.Ups[0]),
		fmt.Sprintf(`warning: leftover of an earlier run not signalled instance=%s pid=%d command="sleep 300" signal=SIGTERM error="signal pid %d: operation not permitted"`,
			name, sudo.Process.Pid, sudo.Process.Pid),
		"warning: killed what was left in the cgroup of an earlier run",
	} {
		if !strings.Contains(r.Stderr, want) {
			t.Errorf("no line says %q:\n%s", want, r.Stderr)
		}
	}
	if strings.Contains(r.Stderr, fmt.Sprintf("leftover of an earlier run instance=%s pid=%d ", name, sudo.Process.Pid)) {
		t.Errorf("a line claims root's process was signalled:\n%s", r.Stderr)
	}
	if alive := itest.Running(left, first.Ups); len(alive) > 0 {
		t.Errorf("nobody's leftover %v still runs", alive)
	}
	if err := sudo.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("root's process in nobody's stale cgroup: %v, want it killed by the cgroup's kill", err)
	}
}
