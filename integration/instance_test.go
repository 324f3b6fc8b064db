package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// sharedCgroup makes a cgroup for several runs of one test, removed (with
// whatever is left in it) when the test ends.
func sharedCgroup(t *testing.T, pidsMax int) *testGroup {
	t.Helper()
	cg := newCgroup(t, pidsMax)
	t.Cleanup(func() { cg.remove(t) })
	return cg
}

var instanceSeq atomic.Int64

// instanceName is unique to one test run: instances are host-wide. Its
// lock file goes when the test ends.
func instanceName(t *testing.T) string {
	name := fmt.Sprintf("it-%d-%d", os.Getpid(), instanceSeq.Add(1))
	t.Cleanup(func() { os.Remove("/run/reaper/" + name + ".lock") })
	return name
}

// pidfds opens a pidfd on each pid, closed when the test ends.
func pidfds(t testing.TB, pids []int) []int {
	t.Helper()
	return pidfdsUntil(t, t, pids)
}

// cleaner is what ends with a test: a test, or the parent of the subtest
// that makes it.
type cleaner interface{ Cleanup(func()) }

// pidfdsUntil opens a pidfd on each pid, closed when owner ends.
func pidfdsUntil(t testing.TB, owner cleaner, pids []int) []int {
	t.Helper()
	var fds []int
	for _, pid := range pids {
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			t.Fatalf("pidfd_open(%d): %v", pid, err)
		}
		owner.Cleanup(func() { unix.Close(fd) })
		fds = append(fds, fd)
	}
	return fds
}

// running lists the pids whose pidfds say they have not exited.
func running(fds []int, pids []int) []int {
	var alive []int
	for i, fd := range fds {
		p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(p, 0)
		for errors.Is(err, unix.EINTR) { // not an exit: ask again
			n, err = unix.Poll(p, 0)
		}
		if n == 0 {
			alive = append(alive, pids[i])
		}
	}
	return alive
}

func TestLeftoversOfAKilledReaperAreSweptAtNextStart(t *testing.T) {
	for _, mode := range []string{"on", "off"} {
		t.Run("cgroup="+mode, func(t *testing.T) {
			cg := sharedCgroup(t, 256)
			name := instanceName(t)
			addr := freeAddr(t)
			// Run 1: setsid escapees, a double fork, and a listener that
			// ignores SIGTERM, all outside COMMAND's process group.
			body := fmt.Sprintf(`setsid sh -c "$LEAF" &
(sh -c "$STUBBORN" &)
setsid "$HELPER" listen -ignore-term %s "$F" &`, addr)
			// --guardian=off: the next start's sweep is the fallback when no
			// guardian stopped them (it was off, or killed too).
			first := plant(t, false, tree{flags: []string{"--instance=" + name, "--cgroup=" + mode, "--guardian=off"}, ups: 3, body: body,
				cgroup: cg, leave: true})
			left := pidfds(t, first.ups)
			first.signal(syscall.SIGKILL) // reaper dies without a teardown
			first.wait()
			if alive := running(left, first.ups); len(alive) != 3 {
				t.Fatalf("the killed reaper left %v running; the test needs its three escapees", alive)
			}
			// Run 2, same instance: sweep first, then the port is free.
			ready := newFIFO(t, "listening")
			second := start(t, opts{cg: cg, args: []string{"-v", "--instance=" + name, "--cgroup=" + mode,
				"--grace=1s", "--wait-port=" + portOf(addr), bin().helper, "listen", addr, ready.path}})
			line := ready.next(t)
			if !strings.HasPrefix(line, "listening ") {
				t.Fatalf("COMMAND of the second run wrote %q", line)
			}
			if alive := running(left, first.ups); len(alive) > 0 {
				t.Errorf("leftovers of the first run still run: %v", alive)
			}
			for _, pid := range first.ups {
				if !regexp.MustCompile(fmt.Sprintf(`warning: leftover of an earlier run instance=%s pid=%d `, regexp.QuoteMeta(name), pid)).
					MatchString(second.stderr.String()) {
					t.Errorf("no warning names leftover %d:\n%s", pid, second.stderr)
				}
			}
			second.signal(syscall.SIGTERM) // the listener has no handler: it dies of it
			if r := second.wait(); r.status() != 128+15 || r.leftovers() != "" {
				t.Errorf("second run: exit %d, left %s\n%s", r.status(), r.leftovers(), r.Stderr)
			}
		})
	}
}

func TestDuplicateInstanceIsRefusedAndReplaceTakesOver(t *testing.T) {
	cg := sharedCgroup(t, 128)
	name := instanceName(t)
	rec := newFIFO(t, "first")
	first := start(t, opts{cg: cg, args: []string{"--instance=" + name, bin().helper, "record", rec.path}})
	rec.ready(t)
	// A second live instance is refused, naming the first.
	code, _, stderr := runReaper(t, nil, "--instance="+name, "true")
	want := fmt.Sprintf("instance %s is running as pid %d", name, first.reaperPID())
	if code != 2 || !strings.Contains(stderr, want) {
		t.Errorf("second instance: exit %d, %q; want 2 and %q", code, stderr, want)
	}
	// From a PID namespace whose /proc is the parent's, the holder's pid
	// (/proc/locks) is not one to signal: --replace is refused.
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	out, err := exec.CommandContext(ctx, "unshare", "--pid", "--fork", "--kill-child", "--",
		bin().reaper, "--instance="+name, "--replace", "true").CombinedOutput()
	cancel()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "--replace needs a /proc") {
		t.Errorf("--replace with a foreign /proc: %v, %q; want exit 2, refused", err, out)
	}
	select {
	case <-first.ended:
		t.Fatalf("the first instance ended on a refused --replace\n%s", first.stderr)
	default:
	}
	// --replace stops the first (its COMMAND gets SIGTERM) and runs.
	code, _, stderr = runReaper(t, nil, "--instance="+name, "--replace", "sh", "-c", "exit 4")
	if code != 4 {
		t.Errorf("--replace: exit %d, want COMMAND's 4\n%s", code, stderr)
	}
	if got := rec.next(t); got != "SIGTERM" {
		t.Errorf("the replaced instance's COMMAND got %s, want SIGTERM", got)
	}
	if r := first.wait(); r.status() != 0 || r.leftovers() != "" {
		t.Errorf("replaced instance: exit %d, left %s", r.status(), r.leftovers())
	}
	if code, _, _ := runReaper(t, nil, "--replace", "true"); code != 2 {
		t.Errorf("--replace without --instance: exit %d, want 2", code)
	}
}

func TestCgroupModeContainsAndRemovesItsGroup(t *testing.T) {
	cg := sharedCgroup(t, 128)
	name := instanceName(t)
	out := newFIFO(t, "cgroup")
	s := start(t, opts{cg: cg, args: []string{"--cgroup=on", "--instance=" + name, "sh", "-c",
		`setsid sh -c 'cat /proc/self/cgroup > "$F"; exec sleep 300' & exec sleep 300`},
		env: []string{"F=" + out.path}})
	// Even the setsid escapee was born in the instance's leaf group.
	var leaf string
	for leaf == "" {
		if path, ok := strings.CutPrefix(out.next(t), "0::"); ok {
			leaf = path
		}
	}
	if filepath.Base(leaf) != "reaper-instance-"+name {
		t.Fatalf("the escapee is in cgroup %s, want a leaf named reaper-instance-%s", leaf, name)
	}
	dir := filepath.Join(cg.v2, "reaper-instance-"+name)
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("leaf group: %v", err)
	}
	s.signal(syscall.SIGTERM)
	if r := s.wait(); r.status() != 128+15 || r.leftovers() != "" {
		t.Errorf("exit %d (want 143), left %s\n%s", r.status(), r.leftovers(), r.Stderr)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the leaf group %s is still there after reaper exited (%v)", dir, err)
	}
}

func TestCgroupAutoFallsBackWhereCgroupsAreReadOnly(t *testing.T) {
	requireRoot(t)
	v2, _ := cgroupMounts()
	if v2 == "" {
		skip(t, "no cgroup2 mount")
	}
	// A mount namespace of its own, where cgroup2 is bind-mounted
	// read-only over itself: as in many containers.
	readOnly := func(args ...string) (int, string) {
		script := `mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"`
		cmd := exec.Command("unshare", append([]string{"--mount", "sh", "-c", script, "sh", v2, bin().reaper}, args...)...)
		out, err := cmd.CombinedOutput()
		code, ok := shellStatus(err)
		if !ok {
			t.Fatal(err)
		}
		return code, string(out)
	}
	code, out := readOnly("-v", "--cgroup=auto", "sh", "-c", "sleep 300 & exit 3")
	if code != 3 || !strings.Contains(out, "info: cgroup containment off") || !strings.Contains(out, "read-only") {
		t.Errorf("--cgroup=auto on a read-only cgroup2: exit %d, output:\n%s", code, out)
	}
	code, out = readOnly("--cgroup=on", "true")
	if code != 125 || !strings.Contains(out, "cannot contain COMMAND in a cgroup") {
		t.Errorf("--cgroup=on on a read-only cgroup2: exit %d (want 125), output:\n%s", code, out)
	}
}

func TestWaitPort(t *testing.T) {
	// A foreign holder: this test process. reaper names it and gives up.
	port, release := heldPort(t)
	code, _, stderr := runReaper(t, nil, "--wait-port="+port, "--wait-port-timeout=500ms", "true")
	holder := fmt.Sprintf("pid %d (", os.Getpid())
	if code != 2 || !strings.Contains(stderr, "port "+port+" is still held by "+holder) {
		t.Errorf("held port: exit %d, stderr %q; want 2 naming %s", code, stderr, holder)
	}
	if !strings.Contains(stderr, "warning: port is held: waiting for it port="+port) {
		t.Errorf("no warning while waiting: %q", stderr)
	}
	// The holder goes away while reaper waits: COMMAND starts.
	cmd := exec.Command(bin().reaper, "-v", "--wait-port="+port, "--wait-port-timeout=30s", "sh", "-c", "exit 6")
	lines := newLines()
	pipe, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go lines.readFrom(pipe)
	lines.waitFor(t, regexp.MustCompile(`port is held`))
	release()
	err := cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 6 {
		t.Errorf("after the port was freed: %v, want COMMAND's exit 6\n%s", err, lines)
	}
}

func TestStaleCgroupIsSweptWithoutTheMarker(t *testing.T) {
	// A leftover that dropped its environment (env -i) carries no marker:
	// only the stale cgroup of the killed run can find it. Where /proc is
	// another PID namespace's, whose pids are not reaper's to signal, the
	// cgroup is still swept (cgroup.kill).
	for _, foreign := range []bool{false, true} {
		t.Run(map[bool]string{false: "own /proc", true: "foreign /proc"}[foreign], func(t *testing.T) {
			cg := sharedCgroup(t, 128)
			name := instanceName(t)
			first := plant(t, false, tree{flags: []string{"--instance=" + name, "--cgroup=on", "--guardian=off"}, ups: 1, cgroup: cg, leave: true,
				body: `setsid env -i F="$F" sh -c 'echo "up $$" > "$F"; exec sleep 300' &`})
			left := pidfds(t, first.ups)
			first.signal(syscall.SIGKILL)
			first.wait()
			if alive := running(left, first.ups); len(alive) != 1 {
				t.Fatalf("the escapee did not survive the killed reaper: %v", alive)
			}
			r := start(t, opts{cg: cg, pid1: foreign, noMountProc: foreign,
				args: []string{"--instance=" + name, "--cgroup=on", "--grace=1s", "true"}}).wait()
			if alive := running(left, first.ups); len(alive) > 0 {
				t.Errorf("the marker-less leftover %v still runs\n%s", alive, r.Stderr)
			}
			want := fmt.Sprintf("leftover of an earlier run instance=%s pid=%d", name, first.ups[0])
			if foreign {
				want = "only the earlier run's cgroup is swept"
			}
			if !strings.Contains(r.Stderr, want) {
				t.Errorf("no warning says %q:\n%s", want, r.Stderr)
			}
		})
	}
}

func TestDescendantMovedOutOfTheCgroupIsStillStopped(t *testing.T) {
	// Someone allowed to moves a descendant out of reaper's leaf group:
	// cgroup.procs no longer lists it, the /proc walk still finds it.
	cg := sharedCgroup(t, 128)
	other := filepath.Join(cg.v2, "elsewhere")
	if err := os.Mkdir(other, 0o755); err != nil {
		t.Fatal(err)
	}
	p := plant(t, false, tree{flags: []string{"--cgroup=on", "--grace=30s"}, ups: 1, cgroup: cg, body: fmt.Sprintf(
		`sh -c 'echo $$ > %s/cgroup.procs && echo "up $$" > "$F" && exec sleep 300' &`, other)})
	p.release(t)
	r := p.wait() // with the grace of 30 s honoured, the test's deadline comes first
	p.expectClean(t, r, 0)
}

func TestDescendantThatLeftTheCgroupGetsTheStopSignal(t *testing.T) {
	// A descendant moves itself into a sibling group of reaper's leaf and
	// stays below reaper; a TERM-ignoring one keeps the leaf populated for
	// the whole grace period. The one that left must get SIGTERM at once,
	// with the rest, and exit on it: not only the final SIGKILL.
	cg := sharedCgroup(t, 128)
	other := filepath.Join(cg.v2, "elsewhere")
	if err := os.Mkdir(other, 0o755); err != nil {
		t.Fatal(err)
	}
	rec := newFIFO(t, "left")
	p := plant(t, false, tree{flags: []string{"--cgroup=on", "--grace=3s"}, ups: 2, cgroup: cg, env: []string{"R=" + rec.path},
		body: fmt.Sprintf(`sh -c "$STUBBORN" &
sh -c 'echo $$ > %s/cgroup.procs && echo "up $$" > "$F" && exec "$HELPER" record "$R"' &`, other)})
	if line := rec.next(t); !strings.HasPrefix(line, "ready ") {
		t.Fatalf("the recorder wrote %q", line)
	}
	p.release(t)
	r := p.wait()
	p.expectClean(t, r, 0) // the recorder "exited", the stubborn one "killed"
	if line, err := rec.tryNext(time.Second); line != "SIGTERM" {
		t.Errorf("the descendant outside the leaf got %q (%v), want SIGTERM\n%s", line, err, r.Stderr)
	}
}
