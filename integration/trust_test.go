package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/reaper-init/reaper/integration/itest"
	"golang.org/x/sys/unix"
)

// --instance that nobody else can block, fool or turn against its own
// caller: each attack of the security review, as it ran it.

// plantedDir makes a directory in /tmp owned by nobody, as any local user
// could, removed when the test ends.
func plantedDir(t *testing.T, name string) string {
	t.Helper()
	dir := filepath.Join("/tmp", name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestPlantedLocksBlockNobody: another user's FIFO named after the instance,
// and another user's lock held on a file of that name, in a directory of
// theirs in /tmp: a root --instance neither hangs nor refuses to start,
// with or without --replace. (Root used to look at every
// $TMPDIR/reaper-*/NAME.lock.)
func TestPlantedLocksBlockNobody(t *testing.T) {
	itest.RequireRoot(t)
	name := itest.InstanceName(t)
	dir := plantedDir(t, fmt.Sprintf("reaper-planted-%d", os.Getpid()))
	if code, out := itest.AsNobodyRun(t, nil, "mkfifo", filepath.Join(dir, name+".lock")); code != 0 {
		t.Fatalf("mkfifo as nobody: %d %s", code, out)
	}
	other := itest.InstanceName(t)
	held := filepath.Join(dir, other+".lock")
	startReady(t, "held", "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
		"flock", "-x", held, "-c", `echo held; exec sleep 300`)
	for _, args := range [][]string{
		{"--instance=" + name, "sh", "-c", "exit 5"},
		{"--instance=" + other, "sh", "-c", "exit 5"},
		{"--instance=" + other, "--replace", "sh", "-c", "exit 5"},
	} {
		if code, _, stderr := itest.RunReaper(t, []string{"TMPDIR=/tmp"}, args...); code != 5 {
			t.Errorf("reaper %v as root, with nobody's files in %s: exit %d, want 5\n%s", args, dir, code, stderr)
		}
	}
}

// TestOwnLockFileMustBeAFile: in the user's own lock directory, a lock
// "file" that is a FIFO, a symbolic link, a directory, a device, or a hard
// link to another user's file is refused at once (125), never opened
// blocking, never followed.
func TestOwnLockFileMustBeAFile(t *testing.T) {
	itest.RequireRoot(t)
	os.MkdirAll("/run/reaper", 0o700)
	planted := map[string]func(path string) error{
		"FIFO": func(path string) error { return syscall.Mkfifo(path, 0o600) },
		"symbolic link": func(path string) error {
			target := filepath.Join(t.TempDir(), "target")
			os.WriteFile(target, nil, 0o600)
			return os.Symlink(target, path)
		},
		"directory": func(path string) error { return os.Mkdir(path, 0o700) },
		"device":    func(path string) error { return syscall.Mknod(path, syscall.S_IFCHR|0o600, int(unix.Mkdev(1, 3))) },
		"another user's hard link": func(path string) error {
			// nobody's file, on the file system of /run/reaper.
			theirs := fmt.Sprintf("/run/reaper-theirs-%d", os.Getpid())
			if err := os.WriteFile(theirs, nil, 0o600); err != nil {
				return err
			}
			defer os.Remove(theirs)
			if err := os.Chown(theirs, 65534, 65534); err != nil {
				return err
			}
			return os.Link(theirs, path)
		},
	}
	for what, plant := range planted {
		name := itest.InstanceName(t)
		path := "/run/reaper/" + name + ".lock"
		if err := plant(path); err != nil {
			t.Fatalf("%s at %s: %v", what, path, err)
		}
		code, _, stderr := itest.RunReaper(t, nil, "--instance="+name, "true")
		if code != 125 || !strings.Contains(stderr, "instance lock") || strings.Count(stderr, "\n") != 1 {
			t.Errorf("--instance=%s over a planted %s: exit %d, %q; want 125 and one line", name, what, code, stderr)
		}
	}
}

// TestForeignLockDirectory: a user with no runtime directory keeps locks in
// /tmp/reaper-UID, which another user could make first: --instance then
// fails (125), naming it, and follows nothing in it.
func TestForeignLockDirectory(t *testing.T) {
	itest.RequireRoot(t)
	uid := 60000 + os.Getpid()%5000 // a user of the test's own, with no runtime directory
	dir := plantedDir(t, fmt.Sprintf("reaper-%d", uid))
	ctx, cancel := context.WithTimeout(context.Background(), itest.Deadline)
	defer cancel()
	cmd := exec.CommandContext(ctx, "setpriv", fmt.Sprintf("--reuid=%d", uid), fmt.Sprintf("--regid=%d", uid), "--clear-groups", "--",
		itest.Bin().Reaper, "--instance=x", "true")
	cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR=")
	outb, err := cmd.CombinedOutput()
	code, _ := itest.ShellStatus(err)
	if out := string(outb); code != 125 || !strings.Contains(out, dir) || strings.Count(out, "\n") != 1 {
		t.Errorf("a run of user %d with %s made by nobody: exit %d, %q; want 125 naming it", uid, dir, code, out)
	}
}

// TestLockRecordIsNoOrder: the record in a lock file, forged, garbage or
// huge, names no process to signal and no token but hexadecimal ones: a
// run reads what it can, sweeps nothing it names, and runs.
func TestLockRecordIsNoOrder(t *testing.T) {
	itest.RequireRoot(t)
	os.MkdirAll("/run/reaper", 0o700)
	bystander := exec.Command("sleep", "300")
	if err := bystander.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bystander.Process.Kill(); bystander.Wait() })
	for what, record := range map[string][]byte{
		"forged":  fmt.Appendf(nil, "pid %d\ntoken ../../etc\nunswept 0\n", bystander.Process.Pid),
		"garbage": {0, 1, 2, 0xff, '\n', 't', 'o', 'k', 'e', 'n', ' ', 0xfe, '\n'},
		"huge":    append([]byte("pid 1\ntoken "), bytes.Repeat([]byte("ab"), 1<<20)...),
	} {
		name := itest.InstanceName(t)
		if err := os.WriteFile("/run/reaper/"+name+".lock", record, 0o600); err != nil {
			t.Fatal(err)
		}
		if code, _, stderr := itest.RunReaper(t, nil, "--instance="+name, "--grace=1s", "sh", "-c", "exit 5"); code != 5 || stderr != "" {
			t.Errorf("a %s lock record: exit %d, %q; want COMMAND's 5 and nothing said", what, code, stderr)
		}
	}
	if err := bystander.Process.Signal(syscall.Signal(0)); err != nil || itest.ProcState(bystander.Process.Pid) == 'Z' {
		t.Error("the process a forged record named was signalled")
	}
}

// TestSymlinkedLockDirectoryCannotDropALock: a directory another user made,
// a symbolic link to /run/reaper, used to let root's scan close a
// descriptor of its own lock file, which dropped its POSIX record lock: a
// second root run of the instance then started beside the live one and
// swept its COMMAND.
func TestSymlinkedLockDirectoryCannotDropALock(t *testing.T) {
	itest.RequireRoot(t)
	name := itest.InstanceName(t)
	link := fmt.Sprintf("/tmp/reaper-link-%d", os.Getpid())
	if err := os.Symlink("/run/reaper", link); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(link) })
	os.Lchown(link, 65534, 65534)
	cg := itest.SharedCgroup(t, 128)
	rec := itest.NewFIFO(t, "first")
	first := itest.Start(t, itest.Opts{Cgroup: cg, Env: []string{"TMPDIR=/tmp"}, Args: []string{"--instance=" + name, itest.Bin().Helper, "record", rec.Path}})
	rec.Ready(t)
	for i := 0; i < 2; i++ {
		code, _, stderr := itest.RunReaper(t, []string{"TMPDIR=/tmp"}, "--instance="+name, "true")
		if code != 2 || !strings.Contains(stderr, "is running as pid") {
			t.Fatalf("second run %d beside a live first: exit %d, %q; want 2, refused", i, code, stderr)
		}
	}
	first.Signal(syscall.SIGUSR1)
	if got := rec.Next(t); got != "SIGUSR1" {
		t.Fatalf("the first run's COMMAND recorded %q, want SIGUSR1: it was swept", got)
	}
	first.Signal(syscall.SIGTERM)
	first.Wait()
}

// TestUnprivilegedLockIgnoresTMPDIR: two runs of one instance by one user,
// with different TMPDIR (Slurm jobs, CI runners, PrivateTmp=): the second
// is refused.
func TestUnprivilegedLockIgnoresTMPDIR(t *testing.T) {
	itest.RequireRoot(t)
	name := itest.InstanceName(t)
	t.Cleanup(func() { os.Remove(fmt.Sprintf("/tmp/reaper-65534/%s.lock", name)) })
	events := itest.NewFIFO(t, "events")
	first := itest.Start(t, itest.Opts{Env: []string{"TMPDIR=" + t.TempDir(), "F=" + events.Path}, Command: []string{
		"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
		itest.Bin().Reaper, "--instance=" + name, "sh", "-c", `echo "command $$" > "$F"; exec sleep 300`}})
	events.Next(t)
	code, out := itest.AsNobodyRun(t, []string{"TMPDIR=" + itest.SharedDir(t)}, itest.Bin().Reaper, "--instance="+name, "true")
	if code != 2 || !strings.Contains(out, "is running as pid") {
		t.Errorf("second run as the same user with another TMPDIR: exit %d, %q; want 2, refused", code, out)
	}
	first.Signal(syscall.SIGTERM)
	if r := first.Wait(); r.Status() != 143 {
		t.Errorf("first run: exit %d\n%s", r.Status(), r.Stderr)
	}
}

// TestSweepSparesAncestorsAndStrangers: the marker in the environment of
// the process that started reaper (the calling shell) or of another user's
// process is no reason to signal it, even one with the previous run's
// token; a leftover of the previous run, root's own, is swept.
func TestSweepSparesAncestorsAndStrangers(t *testing.T) {
	itest.RequireRoot(t)
	name := itest.InstanceName(t)
	// A first run leaves its token in the lock file.
	if code, _, stderr := itest.RunReaper(t, nil, "--instance="+name, "true"); code != 0 {
		t.Fatalf("first run: %d %s", code, stderr)
	}
	marker := "REAPER_INSTANCE=" + name + ":" + lockToken(t, name)

	// Another user's process with the previous run's marker, and a root
	// leftover with it.
	stranger := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", "sleep", "300")
	stranger.Env = append(os.Environ(), marker)
	leftover := exec.Command("sleep", "300")
	leftover.Env = append(os.Environ(), marker)
	for _, c := range []*exec.Cmd{stranger, leftover} {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Process.Kill(); c.Wait() })
	}
	waitExec(t, stranger.Process.Pid, "sleep")
	// Ancestors: the shell that runs reaper, with the bare name, then
	// with the marker of the run before (each run of the loop is one: the
	// second sweeps the first's token, which its calling shell carries).
	for i, env := range []string{"REAPER_INSTANCE=" + name, ""} {
		if i > 0 {
			env = "REAPER_INSTANCE=" + name + ":" + lockToken(t, name)
		}
		ctx, cancel := context.WithTimeout(context.Background(), itest.Deadline)
		sh := exec.CommandContext(ctx, "sh", "-c", `"$REAPER" --instance="$NAME" --grace=1s true; echo survived`)
		sh.Env = append(os.Environ(), env, "REAPER="+itest.Bin().Reaper, "NAME="+name)
		out, err := sh.CombinedOutput()
		cancel()
		if err != nil || !strings.Contains(string(out), "survived") {
			t.Errorf("the calling shell with %s: %v, %q; want it to survive", env, err, out)
		}
	}
	if err := leftover.Wait(); err == nil || !strings.Contains(err.Error(), "terminated") {
		t.Errorf("root's leftover with the previous token: %v, want it swept (SIGTERM)", err)
	}
	if err := stranger.Process.Signal(syscall.Signal(0)); err != nil {
		t.Errorf("nobody's process with the previous token was swept: %v", err)
	}
}

// waitExec waits until pid runs comm (its exec is done, its environment in
// place).
func waitExec(t *testing.T, pid int, comm string) {
	t.Helper()
	for end := time.Now().Add(itest.Deadline); readTrimmed(fmt.Sprintf("/proc/%d/comm", pid)) != comm; time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("pid %d never ran %s", pid, comm)
		}
	}
}

// TestNamedRunCannotTakeAnUnnamedRunsName: --instance=run-PID-XXXX, the
// value a live unnamed run exports, is refused (2): it would sweep that
// run's COMMAND, and cgroup.kill its group.
func TestNamedRunCannotTakeAnUnnamedRunsName(t *testing.T) {
	events := itest.NewFIFO(t, "events")
	s := itest.Start(t, itest.Opts{Env: []string{"F=" + events.Path}, Args: []string{"sh", "-c", `echo "$REAPER_INSTANCE" > "$F"; exec sleep 300`}})
	value := events.Next(t)
	if !strings.HasPrefix(value, "run-") {
		t.Fatalf("an unnamed run exports %q", value)
	}
	code, _, stderr := itest.RunReaper(t, nil, "--instance="+value, "true")
	if code != 2 || !strings.Contains(stderr, "runs without --instance") {
		t.Errorf("--instance=%s: exit %d, %q; want 2", value, code, stderr)
	}
	if !s.Running() {
		t.Fatal("the unnamed run ended")
	}
	s.Signal(syscall.SIGTERM)
	if r := s.Wait(); r.Status() != 143 {
		t.Errorf("the unnamed run: exit %d, want 143 from its SIGTERM", r.Status())
	}
}

// TestConfigurationDoesNotReachCommand: reaper's own variables configure
// reaper, not a reaper COMMAND starts: COMMAND does not get them.
func TestConfigurationDoesNotReachCommand(t *testing.T) {
	env := []string{"REAPER_REPORT=" + filepath.Join(t.TempDir(), "r.json"), "REAPER_TIMEOUT=60s", "REAPER_WAIT_PORT=1",
		"REAPER_GRACE=2s", "REAPER_STOP_ON=TERM", "REAPER_VERBOSE=0", "OTHER=kept"}
	code, stdout, stderr := itest.RunReaper(t, env, "sh", "-c", `env | grep -E '^(REAPER_(REPORT|TIMEOUT|WAIT_PORT|GRACE|STOP_ON|VERBOSE|INSTANCE)|OTHER)=' | sort`)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != 2 || lines[0] != "OTHER=kept" || !strings.HasPrefix(lines[1], "REAPER_INSTANCE=run-") {
		t.Errorf("COMMAND's REAPER_ and OTHER variables: %q; want OTHER and the marker only", lines)
	}
}

// TestInterruptedSweepIsFinishedLater: a run killed while it sweeps the
// leftovers of the run before (a stop request would only cut the grace
// period short) hands their token on, so the run after it sweeps them.
func TestInterruptedSweepIsFinishedLater(t *testing.T) {
	itest.RequireRoot(t)
	name := itest.InstanceName(t)
	if code, _, stderr := itest.RunReaper(t, nil, "--instance="+name, "--cgroup=off", "true"); code != 0 {
		t.Fatalf("first run: %d %s", code, stderr)
	}
	// The first run's leftover, which ignores SIGTERM.
	leftover := exec.Command("sh", "-c", `trap "" TERM; exec sleep 300`)
	leftover.Env = append(os.Environ(), "REAPER_INSTANCE="+name+":"+lockToken(t, name))
	if err := leftover.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { leftover.Process.Kill(); leftover.Wait() })
	waitExec(t, leftover.Process.Pid, "sleep")
	// The second run finds it, and is killed within the grace period.
	second := itest.Start(t, itest.Opts{Args: []string{"--instance=" + name, "--cgroup=off", "--grace=300s", "true"}, Leave: true})
	second.Stderr.WaitFor(t, regexp.MustCompile(fmt.Sprintf(`leftover of an earlier run .*pid=%d `, leftover.Process.Pid)))
	second.Signal(syscall.SIGKILL)
	if r := second.Wait(); r.Signal != int(syscall.SIGKILL) {
		t.Fatalf("second run killed in its sweep: exit %d, want SIGKILL\n%s", r.Status(), r.Stderr)
	}
	pids := []int{leftover.Process.Pid}
	fds := itest.Pidfds(t, pids)
	if len(itest.Running(fds, pids)) == 0 {
		t.Fatal("the leftover is gone after the interrupted sweep: the test needs it")
	}
	// The third run sweeps it: SIGTERM is ignored, SIGKILL after 1 s.
	if code, _, stderr := itest.RunReaper(t, nil, "--instance="+name, "--cgroup=off", "--grace=1s", "true"); code != 0 {
		t.Fatalf("third run: %d %s", code, stderr)
	}
	if len(itest.Running(fds, pids)) > 0 {
		t.Fatal("the third run left the leftover of the first running: the interrupted sweep's token was lost")
	}
	if err := leftover.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("the leftover after the third run: %v, want it swept (SIGKILL)", err)
	}
}

// lockToken returns the token the last run of instance name recorded.
func lockToken(t *testing.T, name string) string {
	t.Helper()
	record, err := os.ReadFile("/run/reaper/" + name + ".lock")
	for _, line := range strings.Split(string(record), "\n") {
		if v, ok := strings.CutPrefix(line, "token "); ok {
			return v
		}
	}
	t.Fatalf("no token in the lock file: %q %v", record, err)
	return ""
}
