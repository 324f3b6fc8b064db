package integration

import (
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
)

func TestLeftoversOfAKilledReaperAreSweptAtNextStart(t *testing.T) {
	for _, mode := range []string{"on", "off"} {
		t.Run("cgroup="+mode, func(t *testing.T) {
			cg := itest.SharedCgroup(t, 256)
			name := itest.InstanceName(t)
			addr := itest.FreeAddr(t)
			// Run 1: setsid escapees, a double fork, and a listener that
			// ignores SIGTERM, all outside COMMAND's process group.
			body := fmt.Sprintf(`setsid sh -c "$LEAF" &
(sh -c "$STUBBORN" &)
setsid "$HELPER" listen -ignore-term %s "$F" &`, addr)
			// --guardian=off: the next start's sweep is the fallback when no
			// guardian stopped them (it was off, or killed too).
			first := itest.Plant(t, false, itest.Tree{Flags: []string{"--instance=" + name, "--cgroup=" + mode, "--guardian=off"}, Ups: 3, Body: body,
				Cgroup: cg, Leave: true})
			left := itest.Pidfds(t, first.Ups)
			first.Signal(syscall.SIGKILL) // reaper dies without a teardown
			first.Wait()
			if alive := itest.Running(left, first.Ups); len(alive) != 3 {
				t.Fatalf("the killed reaper left %v running; the test needs its three escapees", alive)
			}
			// Run 2, same instance: sweep first, then the port is free.
			ready := itest.NewFIFO(t, "listening")
			second := itest.Start(t, itest.Opts{Cgroup: cg, Args: []string{"-v", "--instance=" + name, "--cgroup=" + mode,
				"--grace=1s", "--wait-port=" + itest.PortOf(addr), itest.Bin().Helper, "listen", addr, ready.Path}})
			line := ready.Next(t)
			if !strings.HasPrefix(line, "listening ") {
				t.Fatalf("COMMAND of the second run wrote %q", line)
			}
			if alive := itest.Running(left, first.Ups); len(alive) > 0 {
				t.Errorf("leftovers of the first run still run: %v", alive)
			}
			for _, pid := range first.Ups {
				if !regexp.MustCompile(fmt.Sprintf(`warning: leftover of an earlier run instance=%s pid=%d `, regexp.QuoteMeta(name), pid)).
					MatchString(second.Stderr.String()) {
					t.Errorf("no warning names leftover %d:\n%s", pid, second.Stderr)
				}
			}
			second.Signal(syscall.SIGTERM) // the listener has no handler: it dies of it
			if r := second.Wait(); r.Status() != 128+15 || r.Leftovers() != "" {
				t.Errorf("second run: exit %d, left %s\n%s", r.Status(), r.Leftovers(), r.Stderr)
			}
		})
	}
}

func TestDuplicateInstanceIsRefusedAndReplaceTakesOver(t *testing.T) {
	cg := itest.SharedCgroup(t, 128)
	name := itest.InstanceName(t)
	rec := itest.NewFIFO(t, "first")
	first := itest.Start(t, itest.Opts{Cgroup: cg, Args: []string{"--instance=" + name, itest.Bin().Helper, "record", rec.Path}})
	rec.Ready(t)
	// A second live instance is refused, naming the first.
	code, _, stderr := itest.RunReaper(t, nil, "--instance="+name, "true")
	want := fmt.Sprintf("instance %s is running as pid %d", name, first.ReaperPID())
	if code != 2 || !strings.Contains(stderr, want) {
		t.Errorf("second instance: exit %d, %q; want 2 and %q", code, stderr, want)
	}
	// From a PID namespace whose /proc is the parent's, the holder's pid
	// (/proc/locks) is not one to signal: --replace is refused.
	ctx, cancel := context.WithTimeout(context.Background(), itest.Deadline)
	out, err := exec.CommandContext(ctx, "unshare", "--pid", "--fork", "--kill-child", "--",
		itest.Bin().Reaper, "--instance="+name, "--replace", "true").CombinedOutput()
	cancel()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "--replace needs a /proc") {
		t.Errorf("--replace with a foreign /proc: %v, %q; want exit 2, refused", err, out)
	}
	select {
	case <-first.Ended:
		t.Fatalf("the first instance ended on a refused --replace\n%s", first.Stderr)
	default:
	}
	// --replace stops the first (its COMMAND gets SIGTERM) and runs.
	code, _, stderr = itest.RunReaper(t, nil, "--instance="+name, "--replace", "sh", "-c", "exit 4")
	if code != 4 {
		t.Errorf("--replace: exit %d, want COMMAND's 4\n%s", code, stderr)
	}
	if got := rec.Next(t); got != "SIGTERM" {
		t.Errorf("the replaced instance's COMMAND got %s, want SIGTERM", got)
	}
	if r := first.Wait(); r.Status() != 0 || r.Leftovers() != "" {
		t.Errorf("replaced instance: exit %d, left %s", r.Status(), r.Leftovers())
	}
	if code, _, _ := itest.RunReaper(t, nil, "--replace", "true"); code != 2 {
		t.Errorf("--replace without --instance: exit %d, want 2", code)
	}
}

func TestCgroupModeContainsAndRemovesItsGroup(t *testing.T) {
	cg := itest.SharedCgroup(t, 128)
	name := itest.InstanceName(t)
	out := itest.NewFIFO(t, "cgroup")
	s := itest.Start(t, itest.Opts{Cgroup: cg, Args: []string{"--cgroup=on", "--instance=" + name, "sh", "-c",
		`setsid sh -c 'cat /proc/self/cgroup > "$F"; exec sleep 300' & exec sleep 300`},
		Env: []string{"F=" + out.Path}})
	// Even the setsid escapee was born in the instance's leaf group.
	var leaf string
	for leaf == "" {
		if path, ok := strings.CutPrefix(out.Next(t), "0::"); ok {
			leaf = path
		}
	}
	if filepath.Base(leaf) != "reaper-instance-"+name {
		t.Fatalf("the escapee is in cgroup %s, want a leaf named reaper-instance-%s", leaf, name)
	}
	dir := filepath.Join(cg.V2, "reaper-instance-"+name)
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("leaf group: %v", err)
	}
	s.Signal(syscall.SIGTERM)
	if r := s.Wait(); r.Status() != 128+15 || r.Leftovers() != "" {
		t.Errorf("exit %d (want 143), left %s\n%s", r.Status(), r.Leftovers(), r.Stderr)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the leaf group %s is still there after reaper exited (%v)", dir, err)
	}
}

func TestCgroupAutoFallsBackWhereCgroupsAreReadOnly(t *testing.T) {
	itest.RequireRoot(t)
	v2, _ := itest.CgroupMounts()
	if v2 == "" {
		itest.Skip(t, "no cgroup2 mount")
	}
	// A mount namespace of its own, where cgroup2 is bind-mounted
	// read-only over itself: as in many containers.
	readOnly := func(args ...string) (int, string) {
		script := `mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"`
		cmd := exec.Command("unshare", append([]string{"--mount", "sh", "-c", script, "sh", v2, itest.Bin().Reaper}, args...)...)
		out, err := cmd.CombinedOutput()
		code, ok := itest.ShellStatus(err)
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
	port, release := itest.HeldPort(t)
	code, _, stderr := itest.RunReaper(t, nil, "--wait-port="+port, "--wait-port-timeout=500ms", "true")
	holder := fmt.Sprintf("pid %d (", os.Getpid())
	if code != 2 || !strings.Contains(stderr, "port "+port+" is still held by "+holder) {
		t.Errorf("held port: exit %d, stderr %q; want 2 naming %s", code, stderr, holder)
	}
	if !strings.Contains(stderr, "warning: port is held: waiting for it port="+port) {
		t.Errorf("no warning while waiting: %q", stderr)
	}
	// The holder goes away while reaper waits: COMMAND starts.
	cmd := exec.Command(itest.Bin().Reaper, "-v", "--wait-port="+port, "--wait-port-timeout=30s", "sh", "-c", "exit 6")
	lines := itest.NewLines()
	pipe, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go lines.Collect(pipe)
	lines.WaitFor(t, regexp.MustCompile(`port is held`))
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
			cg := itest.SharedCgroup(t, 128)
			name := itest.InstanceName(t)
			first := itest.Plant(t, false, itest.Tree{Flags: []string{"--instance=" + name, "--cgroup=on", "--guardian=off"}, Ups: 1, Cgroup: cg, Leave: true,
				Body: `setsid env -i F="$F" sh -c 'echo "up $$" > "$F"; exec sleep 300' &`})
			left := itest.Pidfds(t, first.Ups)
			first.Signal(syscall.SIGKILL)
			first.Wait()
			if alive := itest.Running(left, first.Ups); len(alive) != 1 {
				t.Fatalf("the escapee did not survive the killed reaper: %v", alive)
			}
			r := itest.Start(t, itest.Opts{Cgroup: cg, PID1: foreign, NoMountProc: foreign,
				Args: []string{"--instance=" + name, "--cgroup=on", "--grace=1s", "true"}}).Wait()
			if alive := itest.Running(left, first.Ups); len(alive) > 0 {
				t.Errorf("the marker-less leftover %v still runs\n%s", alive, r.Stderr)
			}
			want := fmt.Sprintf("leftover of an earlier run instance=%s pid=%d", name, first.Ups[0])
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
	cg := itest.SharedCgroup(t, 128)
	other := filepath.Join(cg.V2, "elsewhere")
	if err := os.Mkdir(other, 0o755); err != nil {
		t.Fatal(err)
	}
	p := itest.Plant(t, false, itest.Tree{Flags: []string{"--cgroup=on", "--grace=30s"}, Ups: 1, Cgroup: cg, Body: fmt.Sprintf(
		`sh -c 'echo $$ > %s/cgroup.procs && echo "up $$" > "$F" && exec sleep 300' &`, other)})
	p.Release(t)
	r := p.Wait() // with the grace of 30 s honoured, the test's deadline comes first
	p.ExpectClean(t, r, 0)
}

func TestStubbornDescendantOutsideTheCgroupIsKilled(t *testing.T) {
	// A TERM-ignoring descendant moves itself into a sibling group of
	// reaper's leaf, while another keeps the leaf populated: cgroup.kill
	// reaches the leaf alone, so the one outside needs a SIGKILL of its
	// own at the end of the grace period.
	cg := itest.SharedCgroup(t, 128)
	other := filepath.Join(cg.V2, "elsewhere")
	if err := os.Mkdir(other, 0o755); err != nil {
		t.Fatal(err)
	}
	p := itest.Plant(t, false, itest.Tree{Flags: []string{"--cgroup=on", "--grace=1s"}, Ups: 2, Cgroup: cg,
		Body: fmt.Sprintf(`sh -c "$STUBBORN" &
sh -c 'echo $$ > %s/cgroup.procs && exec sh -c "$STUBBORN"' &`, other)})
	p.Release(t)
	r := p.Wait()
	p.ExpectClean(t, r, 0) // both "killed", nothing left
}

func TestDescendantThatLeftTheCgroupGetsTheStopSignal(t *testing.T) {
	// A descendant moves itself into a sibling group of reaper's leaf and
	// stays below reaper; a TERM-ignoring one keeps the leaf populated for
	// the whole grace period. The one that left must get SIGTERM at once,
	// with the rest, and exit on it: not only the final SIGKILL.
	cg := itest.SharedCgroup(t, 128)
	other := filepath.Join(cg.V2, "elsewhere")
	if err := os.Mkdir(other, 0o755); err != nil {
		t.Fatal(err)
	}
	rec := itest.NewFIFO(t, "left")
	p := itest.Plant(t, false, itest.Tree{Flags: []string{"--cgroup=on", "--grace=3s"}, Ups: 2, Cgroup: cg, Env: []string{"R=" + rec.Path},
		Body: fmt.Sprintf(`sh -c "$STUBBORN" &
sh -c 'echo $$ > %s/cgroup.procs && echo "up $$" > "$F" && exec "$HELPER" record "$R"' &`, other)})
	if line := rec.Next(t); !strings.HasPrefix(line, "ready ") {
		t.Fatalf("the recorder wrote %q", line)
	}
	p.Release(t)
	r := p.Wait()
	p.ExpectClean(t, r, 0) // the recorder "exited", the stubborn one "killed"
	if line, err := rec.TryNext(time.Second); line != "SIGTERM" {
		t.Errorf("the descendant outside the leaf got %q (%v), want SIGTERM\n%s", line, err, r.Stderr)
	}
}
