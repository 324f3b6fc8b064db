package systemd

// reaper as a systemd service's ExecStart in a real systemd booted with
// systemd-nspawn, and the helpers that boot one.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/reaper-init/reaper/integration/itest"
)

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
	text := string(itest.MustRead(t, filepath.Join(itest.RepoRoot(t), "examples/reaper-example.service")))
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

// nspawn is a booted container with the queries of this package's tests
// added.
type nspawn struct{ *itest.Nspawn }

// boot boots a container as bootSystemdWith does.
func boot(t testing.TB, spec itest.BootSpec) *nspawn {
	t.Helper()
	return &nspawn{itest.BootSystemdWith(t, spec)}
}

// bootSystemd boots a container with units installed in
// /etc/systemd/system, reaper and the payload in /opt/reaper-test, and
// waits until its systemd is up. It skips the test where systemd-nspawn
// cannot run.
func bootSystemd(t *testing.T, units map[string]string) *nspawn {
	t.Helper()
	return boot(t, itest.BootSpec{Units: units})
}

// waitJournal waits until a line of the unit's journal matches, and
// returns the match.
func (ct *nspawn) waitJournal(t *testing.T, unit string, re *regexp.Regexp) string {
	t.Helper()
	end := time.Now().Add(itest.Deadline)
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
	for _, pid := range itest.AllPIDs() {
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
	end := time.Now().Add(itest.Deadline)
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
