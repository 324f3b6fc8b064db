package integration

// reaper as a systemd service's ExecStart in a real systemd booted with
// systemd-nspawn, and the helpers that boot one.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// servicePayload is a service's wrapper script, as in the port-18789 bug:
// it starts a daemon that leaves its session and ignores SIGTERM, and a
// worker in the background, then waits for them.
const servicePayload = `#!/bin/sh
setsid sh -c 'trap "" TERM; exec sleep 1001' </dev/null >/dev/null 2>&1 &
sleep 1002 &
wait
`

// serviceUnit is a unit running execStart with KillMode=process: systemd
// signals the main process alone, so what it leaves behind is its business.
// REAPER_TEST_PAYLOAD marks the unit's processes for the test. extra are
// more [Service] lines.
func serviceUnit(execStart, marker, extra string) string {
	return fmt.Sprintf(`[Unit]
StartLimitIntervalSec=0

[Service]
ExecStart=%s
Environment=REAPER_TEST_PAYLOAD=%s
KillMode=process
TimeoutStopSec=20s
Delegate=yes
%s`, execStart, marker, extra)
}

func TestSystemdUnitRestarts(t *testing.T) {
	const dir = "/opt/reaper-test"
	units := map[string]string{
		// No SuccessExitStatus=143: reaper dies of the script's SIGTERM.
		"reaper-payload.service": serviceUnit(dir+"/reaper --grace=1s -- "+dir+"/payload.sh", "reaper", ""),
		// The warning: a grace period systemd would not wait for.
		"reaper-warn.service": fmt.Sprintf("[Service]\nType=oneshot\nExecStart=%s/reaper --grace=30s -- true\nTimeoutStopSec=2500ms\n", dir),
	}
	tini, err := exec.LookPath("tini")
	if err == nil {
		// tini exits 143 when the script dies of SIGTERM.
		units["tini-payload.service"] = serviceUnit(tini+" -s -g -- "+dir+"/payload.sh", "tini", "SuccessExitStatus=143\n")
	}
	units["example-web.service"] = exampleUnit(t, dir+"/reaper", "/bin/sleep 300")
	ct := bootSystemd(t, units)

	// The example unit, as shipped but for the programs it runs.
	ct.Systemctl(t, "start", "--job-mode=ignore-dependencies", "example-web.service")
	ct.Systemctl(t, "stop", "example-web.service")
	if journal := ct.Journal(t, "example-web.service"); !strings.Contains(journal, "Deactivated successfully") ||
		strings.Contains(journal, "warning") {
		t.Errorf("examples/reaper-example.service:\n%s", journal)
	}

	began := time.Now()
	left := ct.restartAndStop(t, "reaper-payload.service", "reaper")
	t.Logf("reaper: 5 restarts and a stop in %v", time.Since(began).Round(time.Millisecond))
	for i, procs := range left {
		if len(procs) != 0 {
			t.Errorf("reaper: earlier runs left %q after %s", procs, step(i))
		}
	}

	ct.Systemctl(t, "start", "reaper-warn.service")
	warning := regexp.MustCompile(`reaper: warning: the grace period is not below the unit's stop timeout.* unit=reaper-warn.service grace=30s timeout_stop=2.5s`)
	t.Logf("reaper-warn.service: %s", ct.waitJournal(t, "reaper-warn.service", warning))
	if journal := ct.Journal(t, "reaper-payload.service"); strings.Contains(journal, "grace period") {
		t.Errorf("a warning for a grace period below the stop timeout:\n%s", journal)
	}

	if tini == "" {
		t.Log("tini is not installed: no baseline (apt-get install tini)")
		return
	}
	left = ct.restartAndStop(t, "tini-payload.service", "tini")
	var daemons []int
	for _, procs := range left {
		daemons = append(daemons, strings.Count(strings.Join(procs, "\n"), "sleep 1001"))
	}
	t.Logf("baseline, tini -s -g: setsid daemons of earlier runs left after each restart and the stop: %v", daemons)
	if daemons[len(daemons)-1] == 0 {
		t.Errorf("tini left nothing: the payload does not leak, and the test proves nothing")
	}
}

// exampleUnit returns examples/reaper-example.service with ExecStart running
// reaper from path around command, its flags unchanged.
func exampleUnit(t *testing.T, path, command string) string {
	t.Helper()
	text := string(MustRead(t, filepath.Join(RepoRoot(t), "examples/reaper-example.service")))
	execStart := regexp.MustCompile(`(?m)^ExecStart=/usr/local/bin/reaper (.*) -- .*$`)
	if !execStart.MatchString(text) {
		t.Fatal("examples/reaper-example.service: no ExecStart=/usr/local/bin/reaper ... -- ... line")
	}
	return execStart.ReplaceAllString(text, "ExecStart="+path+" $1 -- "+command)
}

// step names the i-th step of restartAndStop.
func step(i int) string {
	if i == 5 {
		return "the stop"
	}
	return fmt.Sprintf("restart %d", i+1)
}

// Nspawn is a real systemd, booted by systemd-nspawn on this machine's /usr
// with a volatile root.
type Nspawn struct {
	name    string
	dir     string // bound read-only at /opt/reaper-test
	cmd     *exec.Cmd
	ended   chan struct{}
	console string
	Init    int // the container's PID 1, as the host sees it
	initAt  string
	PidNS   string
	groups  []string // the test's cgroups nspawn runs in, cgroup2's first
}

// nspawn is a booted container with the queries of this package's tests
// added.
type nspawn struct{ *Nspawn }

// boot boots a container as bootSystemdWith does.
func boot(t testing.TB, spec BootSpec) *nspawn {
	t.Helper()
	return &nspawn{BootSystemdWith(t, spec)}
}

// bootSystemd boots a container with units installed in
// /etc/systemd/system, reaper and the payload in /opt/reaper-test, and
// waits until its systemd is up. It skips the test where systemd-nspawn
// cannot run.
func bootSystemd(t *testing.T, units map[string]string) *nspawn {
	t.Helper()
	return boot(t, BootSpec{Units: units})
}

// BootSpec is what a container gets besides reaper and payload.sh in
// /opt/reaper-test.
type BootSpec struct {
	Units map[string]string // name: text, in /etc/systemd/system
	Opt   map[string][]byte // name: content, executable, in /opt/reaper-test
	// Files are bound read-only at any other path of the container (path:
	// content); nspawn makes the directories they need.
	Files map[string]string
	// Dirs are host directories bound read-only at the same path.
	Dirs []string
}

// nspawnSeq numbers the containers of this test process: tests that run
// in parallel each boot their own.
var nspawnSeq atomic.Int32

// BootSystemdWith is bootSystemd with more files in the container.
func BootSystemdWith(t testing.TB, spec BootSpec) *Nspawn {
	t.Helper()
	RequireRoot(t)
	for _, tool := range []string{"systemd-nspawn", "script", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			Skip(t, "%s not installed (apt-get install systemd-container util-linux bsdutils): %v", tool, err)
		}
	}
	if _, err := os.Stat("/usr/lib/systemd/systemd"); err != nil {
		Skip(t, "no systemd on this machine to boot: %v", err)
	}
	name := fmt.Sprintf("reaper-nspawn-%d-%d", os.Getpid(), nspawnSeq.Add(1))
	ct := &Nspawn{name: name, dir: t.TempDir(), ended: make(chan struct{})}
	ct.console = filepath.Join(ct.dir, "console.log")
	args := []string{"systemd-nspawn", "-D", "/", "--volatile=yes", "-b", "--register=no", "--keep-unit",
		"--private-network", "-M", ct.name, "--bind-ro=" + ct.dir + ":/opt/reaper-test"}
	ct.Install(t, "reaper", MustRead(t, Bin().Reaper), 0o755)
	ct.Install(t, "payload.sh", []byte(servicePayload), 0o755)
	for name, data := range spec.Opt {
		ct.Install(t, name, data, 0o755)
	}
	for name, text := range spec.Units {
		ct.Install(t, name, []byte(text), 0o644)
		args = append(args, "--bind-ro="+filepath.Join(ct.dir, name)+":/etc/systemd/system/"+name)
	}
	for _, dir := range spec.Dirs {
		args = append(args, "--bind-ro="+dir)
	}
	if len(spec.Files) > 0 {
		dir := t.TempDir()
		i := 0
		for path, text := range spec.Files {
			i++
			host := filepath.Join(dir, fmt.Sprintf("%d-%s", i, filepath.Base(path)))
			if err := os.WriteFile(host, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
			args = append(args, "--bind-ro="+host+":"+path)
		}
	}
	// basic.target: journald and little else, so that nothing waits for a
	// network the container does not have.
	args = append(args, "--", "systemd.firstboot=off", "systemd.unit=basic.target")
	ct.start(t, strings.Join(args, " "))
	ct.waitBoot(t)
	return ct
}

// Install writes a file into the directory bound at /opt/reaper-test.
func (ct *Nspawn) Install(t testing.TB, name string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(ct.dir, name), data, mode); err != nil {
		t.Fatal(err)
	}
}

// start runs systemd-nspawn under script (it needs a terminal) from cgroups
// of the test's own, bounded by pids.max.
func (ct *Nspawn) start(t testing.TB, nspawnLine string) {
	t.Helper()
	ct.makeGroups(t)
	t.Cleanup(func() { ct.shutdown(t) })
	log, err := os.Create(ct.console)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	ct.cmd = exec.Command("sh", append([]string{"-c",
		`for d; do echo $$ > "$d/cgroup.procs" || exit 1; done; exec script -qec "$NSPAWN" /dev/null`, "sh"}, ct.groups...)...)
	ct.cmd.Env = append(os.Environ(), "NSPAWN="+nspawnLine)
	ct.cmd.Stdout, ct.cmd.Stderr = log, log
	if err := ct.cmd.Start(); err != nil {
		close(ct.ended)
		t.Fatal(err)
	}
	go func() { ct.cmd.Wait(); close(ct.ended) }()
}

// makeGroups makes a group named after the container at the root of
// cgroup2, of name=systemd and of the v1 pids hierarchy. With --keep-unit,
// nspawn makes its payload and supervisor groups below its own group in
// name=systemd, and the same path in cgroup2: the paths must agree.
func (ct *Nspawn) makeGroups(t testing.TB) {
	t.Helper()
	bounded := false
	for _, h := range CgroupHierarchies() {
		if !h.V2 && !h.Systemd && !h.Pids {
			continue
		}
		dir := filepath.Join(h.Mount, ct.name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			ct.removeGroups(t)
			Skip(t, "cannot make a cgroup for systemd-nspawn: %v", err)
		}
		if h.V2 {
			ct.groups = append([]string{dir}, ct.groups...)
		} else {
			ct.groups = append(ct.groups, dir)
		}
		if h.V2 || h.Pids {
			bounded = bounded || os.WriteFile(dir+"/pids.max", []byte("2048"), 0) == nil
		}
	}
	if v2, _ := CgroupMounts(); !bounded || len(ct.groups) == 0 || v2 == "" || !strings.HasPrefix(ct.groups[0], v2) {
		ct.removeGroups(t)
		Skip(t, "no cgroup2 group with a pids.max bound for systemd-nspawn")
	}
}

// removeGroups removes the test's cgroups and what nspawn made below them.
func (ct *Nspawn) removeGroups(t testing.TB) {
	for _, dir := range ct.groups {
		RemoveCgroupTree(t, dir)
	}
	ct.groups = nil
}

// BootDeadline bounds the boot and each systemctl call: boots take seconds,
// and minutes on a loaded machine.
const BootDeadline = 3 * time.Minute

// waitBoot finds the container's systemd and waits until it is up.
func (ct *Nspawn) waitBoot(t testing.TB) {
	t.Helper()
	end := time.Now().Add(BootDeadline)
	for ct.Init == 0 {
		select {
		case <-ct.ended:
			Skip(t, "systemd-nspawn cannot run here: it exited %v\n%s", ct.cmd.ProcessState, ct.consoleTail())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(end) {
			t.Fatalf("no systemd in the container after %v\n%s", BootDeadline, ct.consoleTail())
		}
		ct.Init = containerInit(ct.cmd.Process.Pid)
	}
	ct.initAt = StartTime(ct.Init)
	ct.PidNS, _ = os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", ct.Init))
	ctx, cancel := context.WithDeadline(context.Background(), end)
	defer cancel()
	for {
		// "offline" until the container's PID 1 is systemd and listens.
		out, _ := ct.Command(ctx, "systemctl", "is-system-running", "--wait").Output()
		switch state := strings.TrimSpace(string(out)); state {
		case "running", "degraded":
			t.Logf("systemd up in the container (%s) in %v", state, time.Since(end.Add(-BootDeadline)).Round(time.Millisecond))
			return
		case "offline", "":
			if ctx.Err() == nil {
				time.Sleep(50 * time.Millisecond)
				continue
			}
		}
		t.Fatalf("systemd in the container: %q\n%s", out, ct.consoleTail())
	}
}

// containerInit returns the host pid of the first process below root that
// is PID 1 of a PID namespace of its own, or 0.
func containerInit(root int) int {
	return FirstBelow(root, func(pid int) bool {
		ns, nested := InnermostPID(pid)
		return nested && ns == 1
	})
}

// consoleTail is the end of the container's console, for failures.
func (ct *Nspawn) consoleTail() string {
	data, _ := os.ReadFile(ct.console)
	if len(data) > 4000 {
		data = data[len(data)-4000:]
	}
	return string(data)
}

// Command runs a program in the container's namespaces.
func (ct *Nspawn) Command(ctx context.Context, argv ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(ct.Init), "-a", "--"}, argv...)...)
	cmd.WaitDelay = time.Second
	return cmd
}

// Systemctl runs systemctl in the container and fails the test on an error.
func (ct *Nspawn) Systemctl(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), BootDeadline)
	defer cancel()
	out, err := ct.Command(ctx, append([]string{"systemctl"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("systemctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// Show returns the values of a unit's properties, separated by spaces.
func (ct *Nspawn) Show(t *testing.T, unit string, props ...string) string {
	t.Helper()
	var values []string
	for _, p := range props {
		values = append(values, ct.Systemctl(t, "show", "--property="+p, "--value", unit))
	}
	return strings.Join(values, " ")
}

// Journal returns a unit's messages.
func (ct *Nspawn) Journal(t *testing.T, unit string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), BootDeadline)
	defer cancel()
	out, _ := ct.Command(ctx, "journalctl", "--no-pager", "-o", "cat", "-u", unit).CombinedOutput()
	return string(out)
}

// waitJournal waits until a line of the unit's journal matches, and
// returns the match.
func (ct *nspawn) waitJournal(t *testing.T, unit string, re *regexp.Regexp) string {
	t.Helper()
	end := time.Now().Add(Deadline)
	for {
		journal := ct.Journal(t, unit)
		if m := re.FindString(journal); m != "" {
			return m
		}
		if time.Now().After(end) {
			t.Fatalf("no line matching %q in the journal of %s:\n%s", re, unit, journal)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// payload lists the processes the units marked with marker, with the run
// (INVOCATION_ID) each belongs to.
func (ct *nspawn) payload(marker string) []payloadProc {
	var procs []payloadProc
	for _, pid := range AllPIDs() {
		if ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid)); ns != ct.PidNS {
			continue
		}
		env, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		p := payloadProc{pid: pid}
		marked := false
		for _, kv := range strings.Split(string(env), "\x00") {
			marked = marked || kv == "REAPER_TEST_PAYLOAD="+marker
			if v, ok := strings.CutPrefix(kv, "INVOCATION_ID="); ok {
				p.run = v
			}
		}
		if marked {
			cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			p.cmdline = strings.TrimSpace(strings.ReplaceAll(string(cmdline), "\x00", " "))
			procs = append(procs, p)
		}
	}
	return procs
}

// payloadProc is a process of a unit's payload.
type payloadProc struct {
	pid     int
	run     string // the unit's INVOCATION_ID when it started
	cmdline string
}

// split returns the command lines of the processes of run, and of the other
// runs.
func split(procs []payloadProc, run string) (current, others []string) {
	for _, p := range procs {
		if p.run == run {
			current = append(current, p.cmdline)
		} else {
			others = append(others, p.cmdline)
		}
	}
	return current, others
}

// waitUp waits until the unit's current run has its four processes: the
// wrapper (reaper or tini), the script, the daemon and the worker.
func (ct *nspawn) waitUp(t *testing.T, unit, marker string) string {
	t.Helper()
	run := ct.Systemctl(t, "show", "--property=InvocationID", "--value", unit)
	end := time.Now().Add(Deadline)
	for {
		current, _ := split(ct.payload(marker), run)
		if len(current) == 4 {
			return run
		}
		if time.Now().After(end) || len(current) > 4 {
			t.Fatalf("%s (run %s): processes %q, want the wrapper, the script, sleep 1001 and sleep 1002", unit, run, current)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// restartAndStop starts the unit, restarts it five times and stops it, each
// time once the run's four processes are up. It returns what earlier runs
// left when each restart and the stop returned, and fails the test when the
// unit failed.
func (ct *nspawn) restartAndStop(t *testing.T, unit, marker string) [][]string {
	t.Helper()
	ct.Systemctl(t, "start", unit)
	ct.waitUp(t, unit, marker)
	var left [][]string
	for i := 0; i < 5; i++ {
		ct.Systemctl(t, "restart", unit)
		run := ct.Systemctl(t, "show", "--property=InvocationID", "--value", unit)
		_, others := split(ct.payload(marker), run)
		left = append(left, others)
		ct.waitUp(t, unit, marker)
	}
	ct.Systemctl(t, "stop", unit)
	_, others := split(ct.payload(marker), "")
	left = append(left, others)
	// An inactive unit without processes is unloaded at once, with its
	// exit status: the journal keeps the account of each stop.
	if state := ct.Show(t, unit, "ActiveState"); state != "inactive" {
		t.Errorf("%s after stop: %s, want inactive", unit, state)
	}
	journal := ct.Journal(t, unit)
	if n := strings.Count(journal, "Deactivated successfully"); n != 6 || strings.Contains(journal, "Failed with result") {
		t.Errorf("%s: %d stops deactivated successfully, want 6; journal:\n%s", unit, n, journal)
	}
	return left
}

// shutdown kills the container's PID 1 (the kernel then kills the rest of
// its PID namespace), waits for nspawn, and removes the cgroups.
func (ct *Nspawn) shutdown(t testing.TB) {
	if ct.Init != 0 && StartTime(ct.Init) == ct.initAt {
		syscall.Kill(ct.Init, syscall.SIGKILL)
	}
	kill := func() { os.WriteFile(ct.groups[0]+"/cgroup.kill", []byte("1"), 0) }
	select {
	case <-ct.ended:
	case <-time.After(Deadline):
		t.Errorf("systemd-nspawn did not exit after its container's PID 1 was killed")
		kill()
		<-ct.ended
	}
	kill() // anything nspawn left
	if err := WaitEmpty(ct.groups[0]); err != nil {
		t.Errorf("cgroup %s: %v", ct.groups[0], err)
	}
	ct.removeGroups(t)
	os.Remove("/run/systemd/nspawn/propagate/" + ct.name)
}
