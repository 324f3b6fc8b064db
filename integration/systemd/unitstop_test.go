package systemd

// reaper in a systemd unit, in a real systemd 252 (issue 23): without
// --grace a stop request gets the unit's stop timeout, COMMAND stops its
// own worker in that time, and what is left once COMMAND has exited gets
// the grace period, not the rest of the timeout; an explicit --grace wins.
// And systemd's cgroup etiquette: no sub-cgroup in a unit that does not
// delegate its cgroup, the teardown by /proc all the same; a leaf where it
// does (Delegate=yes), known from the trusted.delegate attribute alone.
// All units in one boot, at once.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reaper-init/reaper/integration/itest"
	"github.com/reaper-init/reaper/reaper/cgroup"
	"golang.org/x/sys/unix"
)

// unitStopRow is a unit of TestSystemdUnitStop and what its stop must show.
type unitStopRow struct {
	name  string // NAME.service; marks its processes
	exec  string // ExecStart=
	lines string // more [Service] lines
	// the orderly service (integration/testdata/orderly.py, draining 8 s): who must
	// have sent the worker its SIGTERM, "command" or "reaper"
	worker string
	result string                                 // "$SERVICE_RESULT $EXIT_CODE $EXIT_STATUS" of the stop
	logged []string                               // lines the journal must hold
	killed string                                 // what reaper's killed lines must name; "" for none
	during func(*testing.T, *nspawn, unitStopRow) // checks while it runs
}

const reaperV = "/opt/reaper-test/reaper -v "

var unitStopRows = []unitStopRow{
	{name: "budget-30", exec: reaperV + "-- /usr/bin/python3 /opt/reaper-test/orderly.py",
		lines: "TimeoutStopSec=30\nKillMode=mixed", worker: "command", result: "success exited 0",
		logged: []string{`reaper: info: grace period grace=27s from="the unit's TimeoutStopSec"`}},
	{name: "budget-infinity", exec: reaperV + "-- /usr/bin/python3 /opt/reaper-test/orderly.py",
		lines: "TimeoutStopSec=infinity\nKillMode=mixed", worker: "command", result: "success exited 0",
		logged: []string{`reaper: info: a stop request has no deadline of reaper's own from="the unit's TimeoutStopSec=infinity"`}},
	// The explicit grace wins, and the service is killed: the rule shown.
	{name: "budget-grace", exec: reaperV + "--grace=2s -- /usr/bin/python3 /opt/reaper-test/orderly.py",
		lines: "TimeoutStopSec=30\nKillMode=mixed", worker: "reaper", result: "signal killed KILL",
		logged: []string{`reaper: info: grace period grace=2s from=--grace`}, killed: "orderly.py"},
	// OpenClaw's timeout, and a setsid TERM-ignorer left once COMMAND has
	// exited: it gets the grace period, not the rest of 325 s.
	{name: "budget-leftovers", exec: reaperV + "-- /opt/reaper-test/payload.sh",
		lines: "TimeoutStopSec=330\nKillMode=mixed", result: "success killed TERM",
		logged: []string{`reaper: info: grace period grace=5m25s from="the unit's TimeoutStopSec"`,
			`reaper: info: grace period over grace=5s`}, killed: "sleep 1001"},
	{name: "delegate-no", exec: reaperV + "-- /opt/reaper-test/payload.sh",
		lines: "TimeoutStopSec=20\nKillMode=process", result: "success killed TERM",
		logged: []string{`reaper: info: cgroup containment off: walking /proc instead error="the systemd unit delegate-no.service does not delegate its cgroup (Delegate=yes)"`},
		killed: "sleep 1001", during: noLeaf},
	{name: "delegate-yes", exec: reaperV + "-- /opt/reaper-test/payload.sh",
		lines: "TimeoutStopSec=20\nKillMode=process\nDelegate=yes", result: "success killed TERM",
		logged: []string{`reaper: info: contained cgroup=/sys/fs/cgroup/unified/system.slice/delegate-yes.service/reaper-instance-`},
		killed: "sleep 1001", during: leafHoldsAll},
	// No systemctl on PATH: the attribute alone says the unit delegates
	// (and, the unit's timeout unknown, the default grace applies).
	{name: "delegate-attribute", exec: reaperV + "-- /usr/bin/env PATH=/usr/bin:/bin /opt/reaper-test/payload.sh",
		lines: "TimeoutStopSec=20\nKillMode=process\nDelegate=yes\nEnvironment=PATH=/opt/reaper-test/nothing-here", result: "success killed TERM",
		logged: []string{`reaper: info: grace period grace=5s from=default`,
			`reaper: info: contained cgroup=/sys/fs/cgroup/unified/system.slice/delegate-attribute.service/reaper-instance-`},
		killed: "sleep 1001", during: leafHoldsAll},
}

// unitStopUnit is the row's unit: its processes marked, the orderly
// service's events in /run/NAME.events, the stop's result in
// /run/NAME.result.
func unitStopUnit(row unitStopRow) string {
	return fmt.Sprintf(`[Unit]
StartLimitIntervalSec=0

[Service]
ExecStart=%s
Environment=REAPER_TEST_PAYLOAD=%s F=/run/%s.events DRAIN=8
ExecStopPost=/bin/sh -c 'echo "$$SERVICE_RESULT $$EXIT_CODE $$EXIT_STATUS" >/run/%s.result'
%s
`, row.exec, row.name, row.name, row.name, row.lines)
}

func TestSystemdUnitStop(t *testing.T) {
	t.Parallel() // with TestOpenClawGateway: mostly waiting
	itest.RequirePython(t)
	spec := itest.BootSpec{Units: map[string]string{}, Opt: map[string][]byte{"orderly.py": itest.MustRead(t, itest.Testdata(t, "orderly.py"))}}
	for _, row := range unitStopRows {
		spec.Units[row.name+".service"] = unitStopUnit(row)
	}
	n := &native{nspawn: boot(t, spec)}
	// Every row at once, in goroutines of this test (one slot of
	// -parallel): each waits on its own timers.
	var wg sync.WaitGroup
	for _, row := range unitStopRows {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 2*itest.Deadline)
			defer cancel()
			if err := n.unitStop(ctx, t, row); err != nil {
				t.Errorf("%s: %v", row.name, err)
			}
		}()
	}
	wg.Wait()
}

// unitStop starts the row's unit, waits until its processes are up, checks
// it as the row says while it runs, stops it, and checks the stop. It runs
// in a goroutine of its own: it reports with t.Errorf, never t.Fatal, and
// returns what ends it early.
func (n *native) unitStop(ctx context.Context, t *testing.T, row unitStopRow) error {
	unit := row.name + ".service"
	if _, err := n.ctl(ctx, false, "start", unit); err != nil {
		return err
	}
	var pids map[string]int
	var err error
	if row.worker != "" {
		pids, err = n.waitEvents(ctx, row.name, "command", "worker", "escapee")
	} else {
		err = n.waitPayload(ctx, unit, row.name, 4) // reaper, the script, sleep 1001 and sleep 1002
	}
	if err != nil {
		return err
	}
	if row.during != nil {
		row.during(t, n.nspawn, row)
	}
	mainPID := n.prop(ctx, false, unit, "MainPID")
	began := time.Now()
	if _, err := n.ctl(ctx, false, "stop", unit); err != nil {
		return err
	}
	t.Logf("%s: stopped in %v", unit, time.Since(began).Round(time.Millisecond))

	if left := n.payload(row.name); len(left) > 0 {
		t.Errorf("%s: left %v", unit, left)
	}
	if result := strings.TrimSpace(n.readFile("/run/" + row.name + ".result")); result != row.result {
		t.Errorf("%s: the stop's result %q, want %q", unit, result, row.result)
	}
	journal, _ := n.try(ctx, "journalctl", "--no-pager", "-o", "cat", "-u", unit)
	for _, line := range row.logged {
		if !strings.Contains(journal, line) {
			t.Errorf("%s: no %q in the journal:\n%s", unit, line, journal)
		}
	}
	killed := regexp.MustCompile(`(?m)^reaper: warning: killed .*$`).FindAllString(journal, -1)
	for _, line := range killed {
		if row.killed == "" || !strings.Contains(line, row.killed) {
			t.Errorf("%s: %s", unit, line)
		}
	}
	if row.killed != "" && len(killed) == 0 {
		t.Errorf("%s: nothing killed, want %s killed:\n%s", unit, row.killed, journal)
	}
	if row.worker == "" {
		return nil
	}
	senders := map[string]string{}
	for _, line := range n.orderlyEvents(row.name) {
		var who, from string
		if _, err := fmt.Sscanf(line, "term %s %s", &who, &from); err == nil {
			senders[who] = from
		}
	}
	want := map[string]string{"command": mainPID, "worker": fmt.Sprint(pids["command"]), "escapee": mainPID}
	if row.worker == "reaper" {
		want["worker"] = mainPID
	}
	if fmt.Sprint(senders) != fmt.Sprint(want) {
		t.Errorf("%s: SIGTERM senders %v, want %v (reaper %s, command %d)", unit, senders, want, mainPID, pids["command"])
	}
	return nil
}

// waitPayload waits until the unit's current run has want processes
// marked with name.
func (n *native) waitPayload(ctx context.Context, unit, name string, want int) error {
	run := n.prop(ctx, false, unit, "InvocationID")
	end := time.Now().Add(itest.Deadline)
	for {
		current, _ := split(n.payload(name), run)
		if len(current) == want {
			return nil
		}
		if time.Now().After(end) || ctx.Err() != nil || len(current) > want {
			return fmt.Errorf("run %s of %s: processes %q, want %d", run, unit, current, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readFile reads a file of the container; "" when it is missing.
func (ct *nspawn) readFile(path string) string {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/root%s", ct.Init, path))
	return string(data)
}

// orderlyEvents returns the lines integration/testdata/orderly.py wrote to
// /run/NAME.events.
func (ct *nspawn) orderlyEvents(name string) []string {
	var lines []string
	for _, line := range strings.Split(ct.readFile("/run/"+name+".events"), "\n") {
		if line != "" {
			lines = append(lines, line)
		}
	}
	return lines
}

// waitEvents waits until the orderly service of name has announced each
// of its processes, and returns their pids (as the container sees them).
func (ct *nspawn) waitEvents(ctx context.Context, name string, who ...string) (map[string]int, error) {
	end := time.Now().Add(itest.Deadline)
	for {
		pids := map[string]int{}
		for _, line := range ct.orderlyEvents(name) {
			var w string
			var pid int
			if _, err := fmt.Sscanf(line, "%s %d", &w, &pid); err == nil && w != "term" {
				pids[w] = pid
			}
		}
		if len(pids) >= len(who) {
			return pids, nil
		}
		if time.Now().After(end) || ctx.Err() != nil {
			return pids, fmt.Errorf("announced %v, want %v", pids, who)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// unitGroups returns the unit's cgroup directories in the container, in
// cgroup2 and in systemd's own hierarchy (name=systemd): the hybrid
// layout's two.
func (ct *nspawn) unitGroups(unit string) []string {
	var dirs []string
	for _, h := range []string{"unified", "systemd"} {
		dirs = append(dirs, fmt.Sprintf("/proc/%d/root/sys/fs/cgroup/%s/system.slice/%s", ct.Init, h, unit))
	}
	return dirs
}

// leaves lists the reaper-instance-* directories below dir.
func leaves(dir string) []string {
	var found []string
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() && strings.HasPrefix(d.Name(), "reaper-instance-") {
			found = append(found, path)
		}
		return nil
	})
	return found
}

// noLeaf: reaper made no cgroup below the unit's, in either hierarchy, and
// systemd did not mark the unit's delegated.
func noLeaf(t *testing.T, ct *nspawn, row unitStopRow) {
	t.Helper()
	for _, dir := range ct.unitGroups(row.name + ".service") {
		if _, err := os.Stat(dir); err != nil {
			t.Errorf("no cgroup %s: %v", dir, err)
		}
		if found := leaves(dir); len(found) > 0 {
			t.Errorf("%s does not delegate its cgroup, yet reaper made %v", row.name, found)
		}
		if attr := delegateAttr(dir); attr != "" {
			t.Errorf("%s: %s, on a unit without Delegate=yes", dir, attr)
		}
	}
}

// leafHoldsAll: reaper made its leaf below the unit's cgroup2 group, and
// every process of the unit but reaper is in it; systemd marked the
// unit's cgroup2 group delegated with trusted.delegate (systemd 252 marks
// that one alone, not name=systemd's).
func leafHoldsAll(t *testing.T, ct *nspawn, row unitStopRow) {
	t.Helper()
	groups := ct.unitGroups(row.name + ".service")
	found := leaves(groups[0])
	if len(found) != 1 {
		t.Errorf("%s delegates its cgroup: want one reaper-instance-* leaf below it, found %v", row.name, found)
		return
	}
	data, _ := os.ReadFile(filepath.Join(found[0], "cgroup.procs"))
	members := cgroup.ParseProcs(data)
	if len(members) != 3 { // the script, its worker, its escapee
		t.Errorf("%s: leaf %s holds %v, want COMMAND's three processes", row.name, found[0], members)
	}
	attrs := []string{delegateAttr(groups[0]), delegateAttr(groups[1])}
	t.Logf("%s: systemd's delegate attributes: cgroup2 %q, name=systemd %q", row.name, attrs[0], attrs[1])
	if !strings.Contains(attrs[0], "trusted.delegate=1") {
		t.Errorf("%s: cgroup2 group %s without trusted.delegate=1: %q", row.name, groups[0], attrs[0])
	}
}

// delegateAttr describes systemd's delegate attributes on a cgroup
// directory: "trusted.delegate=1 user.delegate=1", "" for none.
func delegateAttr(dir string) string {
	var found []string
	for _, name := range []string{"trusted.delegate", "user.delegate"} {
		buf := make([]byte, 16)
		if n, err := unix.Getxattr(dir, name, buf); err == nil {
			found = append(found, name+"="+string(buf[:n]))
		}
	}
	return strings.Join(found, " ")
}
