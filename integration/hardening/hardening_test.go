package hardening

import (
	"bufio"
	"bytes"
	"cmp"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/reaper-init/reaper/integration/itest"
	"github.com/reaper-init/reaper/signals"
)

func TestSignalStorm(t *testing.T) {
	// 100,000 signals of fourteen kinds (no stop signal) as fast as kill(2)
	// goes, while COMMAND runs: every kind must still arrive (standard ones
	// merge), reaper must not block, and COMMAND's status must come through.
	// The SIGTERM that follows must not be lost behind the storm (with one
	// queue for all signals, a full queue dropped it in about half the runs).
	kinds := []syscall.Signal{syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH, syscall.SIGURG, syscall.SIGCONT,
		syscall.SIGALRM, syscall.SIGPIPE, syscall.SIGVTALRM, syscall.SIGIO, syscall.SIGPWR, syscall.SIGXFSZ,
		signals.RTMin + 1, signals.RTMin + 7, signals.RTMax}
	rec := itest.NewFIFO(t, "storm")
	s := itest.Start(t, itest.Opts{Args: []string{itest.Bin().Helper, "record", rec.Path}})
	rec.Ready(t)
	seen := make(chan string, 1024)
	go func() {
		for {
			rec.File.SetReadDeadline(time.Now().Add(itest.Deadline))
			line, err := rec.Reader.ReadString('\n')
			if err != nil {
				close(seen)
				return
			}
			seen <- strings.TrimSpace(line)
		}
	}()
	target := s.ReaperPID()
	for i := 0; i < 100000; i++ {
		if err := syscall.Kill(target, kinds[i%len(kinds)]); err != nil {
			t.Fatalf("signal %d: %v", i, err)
		}
	}
	missing := map[string]bool{}
	for _, k := range kinds {
		missing[signals.Name(k)] = true
	}
	for len(missing) > 0 {
		name, ok := <-seen
		if !ok {
			t.Fatalf("COMMAND never received %v", missing)
		}
		delete(missing, name)
	}
	go func() { // keep reading, or the recorder blocks on a full pipe
		for range seen {
		}
	}()
	s.Signal(syscall.SIGTERM)
	if r := s.Wait(); r.Status() != 0 || r.Leftovers() != "" {
		t.Errorf("after the storm: exit %d (want 0), left %s\n%s", r.Status(), r.Leftovers(), r.Stderr)
	}
}

// rssKiB is the resident memory of pid, in KiB.
func rssKiB(t *testing.T, pid int) int {
	t.Helper()
	rss, ok := itest.ProcStatus(pid, false, "VmRSS")["VmRSS"]
	if !ok {
		t.Fatalf("no VmRSS for pid %d", pid)
	}
	return rss
}

func TestOrphanStormKeepsMemoryFlat(t *testing.T) {
	// 20,000 short-lived orphans, each a subshell's background job: the
	// zombie backlog stays bounded, and reaper keeps no state per pid (52
	// bytes a pid would exceed the 1 MiB allowed). Each fork costs about
	// 1.5 ms on this project's cores: 50,000 orphans took over five minutes
	// beside the other packages' tests in CI.
	p := itest.Plant(t, false, itest.Tree{Ups: 0, PidsMax: 512, Body: `read x < "$G"
i=0; while [ $i -lt 20000 ]; do (true &); i=$((i+1)); done
echo "up $$" > "$F"`})
	reaper := p.ReaperPID()
	before := rssKiB(t, reaper)
	var peak int
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the backlog, sampled: zombies of reaper not reaped yet
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			peak = max(peak, itest.ZombiesOf(reaper))
			time.Sleep(time.Millisecond)
		}
	}()
	p.Release(t) // the storm starts: about a minute here, two on busy cores
	if line := p.Events.NextWithin(t, 6*time.Minute); !strings.HasPrefix(line, "up ") {
		t.Fatalf("payload wrote %q", line)
	}
	close(stop)
	wg.Wait()
	after := rssKiB(t, reaper)
	t.Logf("RSS %d KiB before, %d KiB after 20,000 orphans; peak zombie backlog %d", before, after, peak)
	if after-before > 1024 {
		t.Errorf("RSS grew by %d KiB over the storm, want at most 1024", after-before)
	}
	if peak > 256 { // pids.max is 512: a backlog near it would stop the storm
		t.Errorf("peak zombie backlog %d: reaping does not keep up", peak)
	}
	p.Signal(syscall.SIGTERM) // COMMAND waits at its gate for ever
	if r := p.Wait(); r.Leftovers() != "" {
		t.Errorf("left %s", r.Leftovers())
	}
}

// startInCgroup starts argv outside reaper's tree, in cg, and kills it when
// the test ends.
func startInCgroup(t *testing.T, cg *itest.Cgroup, env []string, argv ...string) *exec.Cmd {
	t.Helper()
	cmd := inCgroup(cg, env, argv...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

// inCgroup is a command that joins cg, then executes argv.
func inCgroup(cg *itest.Cgroup, env []string, argv ...string) *exec.Cmd {
	join := itest.JoinArgv(argv...)
	cmd := exec.Command(join[0], join[1:]...)
	cmd.Env = append(append(os.Environ(), cg.JoinEnv()...), env...)
	return cmd
}

// bystanders are the processes startBystanders started, and the first
// error that kept one from starting.
type bystanders struct {
	cmds []*exec.Cmd
	err  error
}

// startBystanders starts, every 250 ms until stop is closed, a helper in cg
// (under the command line prefix) that records each signal it gets to log;
// the returned channel then yields them all.
func startBystanders(cg *itest.Cgroup, prefix []string, log string, stop <-chan struct{}) <-chan bystanders {
	started := make(chan bystanders, 1)
	go func() {
		var all bystanders
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				started <- all
				return
			case <-tick.C:
			}
			cmd := inCgroup(cg, nil, append(append([]string{}, prefix...), itest.Bin().Helper, "record", "-pid", log)...)
			if err := cmd.Start(); err != nil {
				all.err = cmp.Or(all.err, err)
				continue
			}
			all.cmds = append(all.cmds, cmd)
		}
	}()
	return started
}

// pidNamespace starts, in cg, a PID namespace of the test's whose
// kernel.pid_max is pidMax, and returns the command line that runs a
// program in it (and in its mount namespace, whose /proc is its own). It
// returns nil where pid_max is not kept per namespace (before Linux 6.14).
func pidNamespace(t *testing.T, cg *itest.Cgroup, pidMax int) []string {
	t.Helper()
	init := inCgroup(cg, nil, "unshare", "--pid", "--fork", "--mount-proc", "--kill-child", "--",
		itest.Bin().Harness, "-init", "-pid-max", strconv.Itoa(pidMax))
	out, err := init.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	init.Stderr = &stderr
	if err := init.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		init.Process.Kill() // --kill-child: the namespace's init dies with unshare, and the kernel kills the rest
		init.Wait()
	})
	ready := make(chan bool, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		ready <- line == "ready\n"
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Logf("no PID namespace with a pid_max of its own: %s", stderr.String())
			return nil
		}
	case <-time.After(itest.Deadline):
		t.Fatalf("the PID namespace's init did not start: %s", stderr.String())
	}
	holder := itest.FirstBelow(init.Process.Pid, func(pid int) bool {
		ns, nested := itest.InnermostPID(pid)
		return nested && ns == 1
	})
	if holder == 0 {
		t.Fatal("no init in the new PID namespace")
	}
	return []string{"nsenter", "-t", strconv.Itoa(holder), "--pid", "--mount", "--"}
}

func TestPidReuseNeverSignalsBystanders(t *testing.T) {
	itest.RequireRoot(t)
	// Pids wrap quickly in a PID namespace whose pid_max is 1000: two
	// shells fork without pause while reaper tears down tree after tree,
	// and bystanders, started all along outside reaper's tree (during the
	// teardowns too), take the pids just freed. Not one of them may ever
	// receive a signal. Everything runs in that namespace, the harness
	// that counts what reaper leaves included. (Where pid_max is global,
	// the host's pids must wrap within the test, as they do where it is
	// 32768 and the machine is busy; if they do not, the test proved
	// nothing, and says so.)
	cg := itest.SharedCgroup(t, 4096)
	ns := pidNamespace(t, cg, 1000)
	log := itest.SharedDir(t) + "/bystanders"
	if err := os.WriteFile(log, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		startInCgroup(t, cg, nil, append(append([]string{}, ns...), "sh", "-c", "while :; do :& wait; done")...)
	}
	stop := make(chan struct{})
	started := startBystanders(cg, ns, log, stop)
	var by bystanders
	halt := sync.OnceFunc(func() { close(stop); by = <-started })
	t.Cleanup(func() {
		halt()
		for _, b := range by.cmds {
			b.Process.Kill()
			b.Wait()
		}
	})
	end := time.Now().Add(8 * time.Second)
	cycles := 0
	for ; time.Now().Before(end); cycles++ {
		body := `sleep 30 & setsid sleep 30 & (sleep 30 &); sh -c 'sleep 30 & wait' &`
		args := []string{"--grace=2s", "--cgroup=off", "sh", "-c", body + " exit 0"}
		if cycles%2 == 1 {
			args[1] = "--cgroup=auto"
		}
		// (The shared cgroup holds the bystanders and forkers: only what
		// reaper left below the harness counts.)
		if r := itest.Start(t, itest.Opts{Cgroup: cg, Prefix: ns, Args: args}).Wait(); r.Status() != 0 || len(r.Survivors)+len(r.Zombies) > 0 {
			t.Fatalf("cycle %d: exit %d, left %v %v\n%s", cycles, r.Status(), r.Survivors, r.Zombies, r.Stderr)
		}
	}
	halt()
	if by.err != nil {
		t.Fatalf("a bystander did not start: %v", by.err)
	}
	for _, b := range by.cmds {
		// A SIGKILL has no handler to record it: a bystander that got one
		// is dead by now, and so is nsenter, its parent, a zombie of the
		// test's. (The bystanders themselves die with the namespace.)
		if itest.ProcState(b.Process.Pid) == 'Z' {
			t.Errorf("bystander %d died during the teardowns", b.Process.Pid)
		}
		b.Process.Signal(syscall.SIGKILL)
		b.Wait()
	}
	data, _ := os.ReadFile(log)
	var signalled []string
	wraps, last := 0, 0
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		pidField, rest, _ := strings.Cut(line, " ")
		if !strings.HasPrefix(rest, "ready ") {
			if line != "" {
				signalled = append(signalled, line)
			}
			continue
		}
		if pid, err := strconv.Atoi(pidField); err == nil {
			if pid < last {
				wraps++ // a bystander got a lower pid than the one before: pids wrapped
			}
			last = pid
		}
	}
	t.Logf("pids wrapped %d times while the bystanders started", wraps)
	t.Logf("%d teardowns of 5 processes each next to %d bystanders", cycles, len(by.cmds))
	if len(signalled) > 0 {
		t.Errorf("bystanders received signals: %v", signalled)
	}
	if wraps == 0 {
		pidMax, _ := os.ReadFile("/proc/sys/kernel/pid_max")
		itest.Skip(t, "pids never wrapped (kernel.pid_max %s, kept per namespace only from Linux 6.14): no bystander reused a pid, so this run proved nothing",
			strings.TrimSpace(string(pidMax)))
	}
}

func TestUnprivileged(t *testing.T) {
	nobody := itest.AsNobody(t)
	t.Run("teardown", func(t *testing.T) {
		p := itest.Plant(t, false, itest.Tree{Shim: append(nobody, "-v", "--grace=1s"), Ups: 3, Body: `sh -c "$LEAF" &
setsid sh -c "$LEAF" &
(sh -c "$STUBBORN" &)`})
		p.Release(t)
		r := p.Wait()
		if r.Status() != 0 || r.Leftovers() != "" {
			t.Errorf("exit %d, left %s\n%s", r.Status(), r.Leftovers(), r.Stderr)
		}
		if !strings.Contains(r.Stderr, "info: cgroup containment off") || !strings.Contains(r.Stderr, "permission denied") {
			t.Errorf("no fallback line naming the missing permission:\n%s", r.Stderr)
		}
		if !regexp.MustCompile(`teardown: 3 descendants, 2 exited after SIGTERM, 1 killed`).MatchString(r.Stderr) {
			t.Errorf("teardown summary missing or wrong:\n%s", r.Stderr)
		}
	})
	t.Run("forwarding", func(t *testing.T) {
		rec := itest.NewFIFO(t, "child")
		s := itest.Start(t, itest.Opts{Command: append(nobody, itest.Bin().Helper, "record", rec.Path)})
		rec.Ready(t)
		s.Signal(syscall.SIGUSR1)
		if got := rec.Next(t); got != "SIGUSR1" {
			t.Errorf("recorded %s, want SIGUSR1", got)
		}
		s.Signal(syscall.SIGTERM)
		if r := s.Wait(); r.Status() != 0 {
			t.Errorf("exit %d", r.Status())
		}
	})
	t.Run("cgroup=on", func(t *testing.T) {
		r := itest.Start(t, itest.Opts{Command: append(nobody, "--cgroup=on", "true")}).Wait()
		if r.Status() != 125 || !strings.Contains(r.Stderr, "cannot contain COMMAND in a cgroup") || !strings.Contains(r.Stderr, "permission denied") {
			t.Errorf("--cgroup=on as nobody: exit %d (want 125), stderr:\n%s", r.Status(), r.Stderr)
		}
	})
}

func TestProcessesProcHides(t *testing.T) {
	// /proc with hidepid=2 and reaper unprivileged: a setuid program below
	// it is invisible. A child of reaper's own is signalled all the same
	// (its pid is reserved); reaper names what it cannot see.
	nobody := itest.AsNobody(t)
	setuid := filepath.Join(itest.SharedDir(t), "setuid-helper")
	data, err := os.ReadFile(itest.Bin().Helper)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(setuid, data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Chmod(setuid, 0o4755); err != nil { // os.Chmod would need os.ModeSetuid
		t.Fatal(err)
	}
	// One hidden process becomes reaper's child (its parent exits), the
	// other stays below a visible shell. On SIGTERM that shell waits for
	// the test to let it go, which the test does once reaper has said it
	// cannot see the grandchild: a walk while the shell lives must see the
	// grandchild listed and unreadable. Then the grandchild becomes
	// reaper's child and gets the SIGTERM.
	child, grandchild := itest.NewFIFO(t, "hidden-child"), itest.NewFIFO(t, "hidden-grandchild")
	letGo := itest.NewFIFO(t, "let-go")
	mount := `mount -t proc -o hidepid=2 proc /proc && exec "$@"`
	shim := append([]string{"unshare", "--mount", "sh", "-c", mount, "sh"}, nobody...)
	shim = append(shim, "-vv", "--grace=30s")
	body := fmt.Sprintf(`%[1]q record %[2]q &
sh -c '%[1]q record %[3]q & trap "read x < %[4]s; exit 0" TERM; wait' &`, setuid, child.Path, grandchild.Path, letGo.Path)
	p := itest.Plant(t, false, itest.Tree{Shim: shim, Body: body})
	child.Ready(t)
	grandchild.Ready(t)
	p.Release(t)
	p.Stderr.WaitFor(t, regexp.MustCompile(`warning: cannot see a descendant`))
	if _, err := letGo.File.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	r := p.Wait()
	for _, rec := range []*itest.FIFO{child, grandchild} {
		if got := rec.Rest(); fmt.Sprint(got) != "[SIGTERM]" {
			t.Errorf("a hidden process recorded %v, want [SIGTERM]\n%s", got, r.Stderr)
		}
	}
	if r.Status() != 0 || r.Leftovers() != "" {
		t.Errorf("exit %d, left %s\n%s", r.Status(), r.Leftovers(), r.Stderr)
	}
	// It said what it could not see, and signalled its hidden child by pid.
	if !strings.Contains(r.Stderr, "warning: cannot see a descendant") || !strings.Contains(r.Stderr, "comm=? signal=SIGTERM") {
		t.Errorf("no word of the hidden processes in:\n%s", r.Stderr)
	}
}

func TestForkFailureAtStart(t *testing.T) {
	// reaper waits for a port (its threads all exist by then); meanwhile
	// its cgroup's pids.max drops to what is running: the fork of COMMAND
	// fails, which must give a clear error and exit 125, not a crash.
	itest.RequireRoot(t)
	cg := itest.SharedCgroup(t, 512)
	limit := filepath.Join(cg.V2, "pids.max")
	current := filepath.Join(cg.V2, "pids.current")
	if cg.Pids != "" {
		limit, current = filepath.Join(cg.Pids, "pids.max"), filepath.Join(cg.Pids, "pids.current")
	}
	port, release := itest.HeldPort(t)
	s := itest.Start(t, itest.Opts{Cgroup: cg, Args: []string{"-v", "--cgroup=off", "--wait-port=" + port,
		"--wait-port-timeout=60s", "sh", "-c", "exit 0"}})
	s.Stderr.WaitFor(t, regexp.MustCompile(`port is held`))
	now, err := os.ReadFile(current)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(limit, []byte(strings.TrimSpace(string(now))), 0); err != nil {
		t.Fatal(err)
	}
	release()
	r := s.Wait()
	os.WriteFile(limit, []byte("512"), 0)
	if r.Status() != 125 || !regexp.MustCompile(`reaper: sh: cannot fork: resource temporarily unavailable`).MatchString(r.Stderr) {
		t.Errorf("fork refused: exit %d (want 125), stderr:\n%s", r.Status(), r.Stderr)
	}
}

func TestTightPidsMax(t *testing.T) {
	// Under a pids.max with little room reaper starts fewer spare threads
	// (it says so) instead of dying while it starts them. reaper is alone
	// in the group: the harness's own threads would eat the room.
	itest.RequireRoot(t)
	for _, limit := range []int{12, 16} {
		s := itest.Start(t, itest.Opts{PidsMax: limit, Alone: true, Args: []string{"--cgroup=off", "sh", "-c", "exit 5"}})
		r := s.Wait()
		if strings.Contains(r.Stderr, "fatal error") || !strings.Contains(r.Stderr, "fewer spare threads") {
			t.Errorf("pids.max %d: stderr:\n%s", limit, r.Stderr)
		}
		// At 12 the fork of COMMAND may find no room left: 125, cleanly.
		if r.Status() != 5 && !(limit == 12 && r.Status() == 125) {
			t.Errorf("pids.max %d: exit %d, want 5\n%s", limit, r.Status(), r.Stderr)
		}
	}
}

func TestSpareThreadsBeforeCommand(t *testing.T) {
	// The Go runtime dies ("newosproc") when it cannot start a thread it
	// wants, and reaper shares pids.max with COMMAND's tree, so reaper
	// starts 8 spare threads before COMMAND, for the runtime to reuse.
	// With GOMAXPROCS=1 (so that the count does not grow with the cores)
	// it runs 6 or 7 threads without them; with them, at least the 8, the
	// main thread, sysmon and the one that ran the others: 11 (14 here).
	// (Whether a tree that fills pids.max leaves reaper standing is what
	// TestTeardownCatchesForksDuringTeardown checks.)
	p := itest.Plant(t, false, itest.Tree{Env: []string{"GOMAXPROCS=1"}})
	if n := itest.ProcStatus(p.Child, false, "Threads")["Threads"]; n < 11 {
		t.Errorf("reaper runs %d threads once COMMAND runs, want at least 11", n)
	}
	p.Release(t)
	p.ExpectClean(t, p.Wait(), 0)
}
