package systemd

// reaper as a systemd-native ExecStart= wrapper (issue 15): notifications,
// the watchdog, socket activation, reload, a clean stop, and a user
// manager's unit, in one boot of a real systemd, each unit run twice: with
// COMMAND as ExecStart= itself (the baseline) and with reaper in front.

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reaper-init/reaper/integration/itest"
)

// The lingering user whose manager runs the user units.
const (
	nativeUser = "native"
	nativeUID  = 4242
)

// nativeWatchdog is the watchdog units' WatchdogSec=.
const nativeWatchdog = 2 * time.Second

// nativeVariant is how a unit runs COMMAND: alone, or under reaper.
type nativeVariant struct {
	name string // in unit names and markers
	wrap string // what ExecStart= puts before COMMAND
}

var nativeVariants = []nativeVariant{
	{"base", ""},
	{"reaper", "/opt/reaper-test/reaper -v --grace=1s -- "},
}

// nativeRow is a row of the table: its units, one per variant,
// and what the test does with them.
type nativeRow struct {
	name  string // as the table names it
	key   string // in unit names and markers (see nativeName)
	mode  string // testdata/native.py's
	lines string // the unit's own [Service] lines
	user  bool   // a unit of the user's manager
	run   func(n *native, ctx context.Context, v nativeVariant) outcome
}

// outcome is what a row's run found: the table's cell, and whether the
// row behaved as it must (under reaper: as the Tests paragraph
// says; alone: as the baseline column says, or the payload proves
// nothing).
type outcome struct {
	cell string
	ok   bool
	why  string // when not ok: what differed, with the evidence
}

var nativeRows = []nativeRow{
	{name: "Type=notify, COMMAND sends READY=1",
		key: "notify", mode: "notify", lines: "Type=notify", run: (*native).notify},
	{name: fmt.Sprintf("Type=notify + WatchdogSec=%v, COMMAND pings when sd_watchdog_enabled() says so", nativeWatchdog.Seconds()),
		key: "watchdog", mode: "watchdog", lines: fmt.Sprintf("Type=notify\nWatchdogSec=%v", nativeWatchdog.Seconds()), run: (*native).watchdog},
	{name: "socket activation, COMMAND accepts on fd 3 when sd_listen_fds() says so",
		key: "socket", mode: "socket", run: (*native).socket},
	{name: "ExecReload=/bin/kill -HUP $MAINPID",
		key: "reload", mode: "reload", lines: "ExecReload=/bin/kill -HUP $MAINPID", run: (*native).reload},
	{name: "KillMode=process, a setsid TERM-ignorer, systemctl stop",
		key: "stop", mode: "stop", lines: "KillMode=process", run: (*native).stop},
	{name: "the same as a lingering user's unit, restarted 3× then stopped",
		key: "user", mode: "stop", lines: "KillMode=process", user: true, run: (*native).user},
}

// nativeName is a unit's name (without its suffix) and the marker of its
// processes.
func nativeName(key string, v nativeVariant) string { return "native-" + key + "-" + v.name }

// nativeEvents is where a unit's payload notes what it does.
func nativeEvents(name string) string { return "/run/reaper-native/" + name + ".events" }

func nativeSocket(v nativeVariant) string { return "/run/reaper-native/socket-" + v.name + ".sock" }

// nativeUnit is a service that runs testdata/native.py in mode, alone or
// under reaper as v says, with the unit's own lines; its processes are
// marked with name. A system unit's payload notes its events. A user unit
// under reaper names its instance: its lock lives in the user's runtime
// directory, and its cgroup below the user manager's delegated one.
func nativeUnit(name, mode string, v nativeVariant, lines string, user bool) string {
	env := "REAPER_TEST_PAYLOAD=" + name
	if !user {
		env += " REAPER_TEST_EVENTS=" + nativeEvents(name)
	}
	if user && v.wrap != "" {
		v.wrap = strings.Replace(v.wrap, " -- ", " --instance="+name+" -- ", 1)
	}
	return fmt.Sprintf(`[Unit]
StartLimitIntervalSec=0

[Service]
ExecStart=%s/usr/bin/python3 /opt/reaper-test/native.py %s
%s
Environment=%s
TimeoutStartSec=10s
TimeoutStopSec=10s
Delegate=yes
`, v.wrap, mode, lines, env)
}

func TestSystemdNative(t *testing.T) {
	itest.RequirePython(t) // the payloads' interpreter
	spec := itest.BootSpec{
		Units: map[string]string{},
		Opt:   map[string][]byte{"native.py": itest.MustRead(t, "testdata/native.py")},
		Files: map[string]string{
			// What a user manager needs here: a PAM stack for
			// systemd-user, and XDG_RUNTIME_DIR (logind would set it).
			"/etc/pam.d/systemd-user":                              "account required pam_unix.so\nsession required pam_unix.so\n",
			"/etc/systemd/system/user@.service.d/reaper-test.conf": "[Service]\nEnvironment=XDG_RUNTIME_DIR=/run/user/%i\n",
		},
	}
	for _, row := range nativeRows {
		for _, v := range nativeVariants {
			name := nativeName(row.key, v)
			unit := nativeUnit(name, row.mode, v, row.lines, row.user)
			if row.user {
				spec.Files["/etc/systemd/user/"+name+".service"] = unit
				continue
			}
			spec.Units[name+".service"] = unit
			if row.key == "socket" {
				spec.Units[name+".socket"] = fmt.Sprintf("[Socket]\nListenStream=%s\n", nativeSocket(v))
			}
		}
	}
	began := time.Now()
	n := &native{nspawn: boot(t, spec)}
	booted := time.Now()

	// Every row of both variants at once: each waits on its own timers
	// (start timeouts, the watchdog's), none on another.
	results := make([][]outcome, len(nativeRows))
	var wg sync.WaitGroup
	for i, row := range nativeRows {
		results[i] = make([]outcome, len(nativeVariants))
		for j, v := range nativeVariants {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 2*itest.Deadline)
				defer cancel()
				results[i][j] = row.run(n, ctx, v)
				if ctx.Err() != nil {
					results[i][j].ok = false
					results[i][j].why += fmt.Sprintf(" (the row's deadline of %v passed)", 2*itest.Deadline)
				}
			}()
		}
	}
	wg.Wait()
	t.Logf("boot %v, the rows %v", booted.Sub(began).Round(time.Millisecond), time.Since(booted).Round(time.Millisecond))

	for j, v := range nativeVariants {
		title := "COMMAND alone (ExecStart=COMMAND), the baseline"
		if v.name == "reaper" {
			title = "under reaper (ExecStart=reaper ... -- COMMAND)"
		}
		var table strings.Builder
		fmt.Fprintf(&table, "%s:\n| unit | result |\n|---|---|\n", title)
		for i, row := range nativeRows {
			fmt.Fprintf(&table, "| %s | %s |\n", row.name, results[i][j].cell)
		}
		t.Logf("%s", table.String())
	}
	for i, row := range nativeRows {
		for j, v := range nativeVariants {
			if r := results[i][j]; !r.ok {
				if v.name == "base" {
					t.Errorf("baseline %q: the payload does not behave as without reaper, so the row proves nothing: %s", row.name, r.why)
				} else {
					t.Errorf("under reaper, %q: %s", row.name, r.why)
				}
			}
		}
	}
}

// native drives the container of TestSystemdNative. Its methods are safe
// for concurrent use and never fail the test: they return what they found.
type native struct {
	*nspawn
	userOnce sync.Once
	userErr  error
}

// try runs a program in the container and returns its output, with the
// error when it failed.
func (n *native) try(ctx context.Context, argv ...string) (string, error) {
	out, err := n.Command(ctx, argv...).CombinedOutput()
	if err != nil {
		err = fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, bytesTail(out))
	}
	return strings.TrimSpace(string(out)), err
}

func bytesTail(b []byte) string {
	if len(b) > 500 {
		b = b[len(b)-500:]
	}
	return strings.TrimSpace(string(b))
}

// asUser is the prefix that runs a program as the user, with its manager's
// runtime directory: systemctl --user reaches the manager through
// $XDG_RUNTIME_DIR/systemd/private, without a session bus.
var asUser = []string{"setpriv", "--reuid=" + strconv.Itoa(nativeUID), "--regid=" + strconv.Itoa(nativeUID), "--init-groups",
	"env", "HOME=/home/" + nativeUser, fmt.Sprintf("XDG_RUNTIME_DIR=/run/user/%d", nativeUID)}

// ctl runs systemctl in the container, or the user's systemctl
// --user with user.
func (n *native) ctl(ctx context.Context, user bool, args ...string) (string, error) {
	argv := append([]string{"systemctl"}, args...)
	if user {
		argv = append(append(slices.Clone(asUser), "systemctl", "--user"), args...)
	}
	return n.try(ctx, argv...)
}

// prop returns a property of a unit, "" when systemctl fails.
func (n *native) prop(ctx context.Context, user bool, unit, name string) string {
	out, _ := n.ctl(ctx, user, "show", "--property="+name, "--value", unit)
	return out
}

// state describes a unit as the table shows it: "active" or
// "failed (Result=timeout)".
func (n *native) state(ctx context.Context, user bool, unit string) string {
	state := n.prop(ctx, user, unit, "ActiveState")
	if state == "active" {
		return state
	}
	return fmt.Sprintf("%s (Result=%s)", state, n.prop(ctx, user, unit, "Result"))
}

// events returns what the payload of name noted so far, one event a line.
func (n *native) events(name string) []string {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/root%s", n.Init, nativeEvents(name)))
	if text := strings.TrimSpace(string(data)); text != "" {
		return strings.Split(text, "\n")
	}
	return nil
}

// eventLog is the payload's events, for the table and failures.
func (n *native) eventLog(name string) string {
	if events := n.events(name); len(events) > 0 {
		return strings.Join(events, "; ")
	}
	return "no events"
}

// waitEvent waits until the payload of name notes an event that begins
// with prefix, and returns it.
func (n *native) waitEvent(ctx context.Context, name, prefix string, within time.Duration) (string, bool) {
	end := time.Now().Add(within)
	for {
		for _, e := range n.events(name) {
			if strings.HasPrefix(e, prefix) {
				return e, true
			}
		}
		if time.Now().After(end) || ctx.Err() != nil {
			return "", false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sleepCtx waits for d, or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-time.After(d):
	case <-ctx.Done():
	}
}

// stopResults waits until the unit's journal holds at least want stops
// ("Stopped UNIT.") and returns the result of each: "success", or R of the
// "Failed with result 'R'." logged since the stop before, with the main
// process's exit when systemd logged it ("code=exited, status=143/n/a").
// A user manager logs neither a success nor a clean exit at info level:
// only failures show. Its lines are in the system journal.
func (n *native) stopResults(ctx context.Context, user bool, unit string, want int) ([]string, error) {
	match := []string{"-u", unit}
	if user {
		match = []string{"USER_UNIT=" + unit, "+", "_SYSTEMD_USER_UNIT=" + unit}
	}
	q := regexp.QuoteMeta(unit)
	line := regexp.MustCompile(`(?m)^(?:` + q + `: Main process exited, (code=\S+, status=\S+)|` +
		q + `: Failed with result '([^']+)'\.|(Stopped) ` + q + `\.)$`)
	end := time.Now().Add(itest.Deadline)
	for {
		journal, err := n.try(ctx, append([]string{"journalctl", "--no-pager", "-o", "cat"}, match...)...)
		var results []string
		exit, result := "", "success"
		for _, m := range line.FindAllStringSubmatch(journal, -1) {
			switch {
			case m[1] != "":
				exit = m[1]
			case m[2] != "":
				result = m[2]
			default:
				results = append(results, result+withExit(exit))
				exit, result = "", "success"
			}
		}
		if len(results) >= want {
			return results, nil
		}
		if time.Now().After(end) || ctx.Err() != nil {
			return results, fmt.Errorf("%d stops in the journal of %s, want %d (%v)\n%s", len(results), unit, want, err, journal)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func withExit(exit string) string {
	if exit == "" {
		return ""
	}
	return " (" + exit + ")"
}

// runs returns the runs (INVOCATION_ID) of the processes marked name, with
// how many processes each has, and their command lines.
func (n *native) runs(name string) (map[string]int, []string) {
	runs := map[string]int{}
	var cmdlines []string
	for _, p := range n.payload(name) {
		runs[p.run]++
		cmdlines = append(cmdlines, p.cmdline)
	}
	return runs, cmdlines
}

// escapeeUp waits until the current run of a stop payload has its escapee.
func (n *native) escapeeUp(ctx context.Context, user bool, unit, name string) error {
	run := n.prop(ctx, user, unit, "InvocationID")
	end := time.Now().Add(itest.Deadline)
	for {
		for _, p := range n.payload(name) {
			if p.run == run && strings.HasPrefix(p.cmdline, "sleep 1001") {
				return nil
			}
		}
		if time.Now().After(end) || ctx.Err() != nil {
			_, cmdlines := n.runs(name)
			return fmt.Errorf("run %s of %s: no escapee (sleep 1001) among %q", run, unit, cmdlines)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ---- the rows ---------------------------------------------------------------

// notify: the unit becomes active once COMMAND's READY=1 reaches systemd.
func (n *native) notify(ctx context.Context, v nativeVariant) outcome {
	name := nativeName("notify", v)
	unit := name + ".service"
	_, err := n.ctl(ctx, false, "start", unit)
	state := n.state(ctx, false, unit)
	if err == nil && state == "active" {
		return outcome{cell: "active", ok: true}
	}
	return outcome{cell: "start failed: " + state,
		why: fmt.Sprintf("%s is %s, want active; systemctl start: %v; payload: %s", unit, state, err, n.eventLog(name))}
}

// watchdog: the unit is still active, with the same main process, after
// three watchdog periods.
func (n *native) watchdog(ctx context.Context, v nativeVariant) outcome {
	name := nativeName("watchdog", v)
	unit := name + ".service"
	if _, err := n.ctl(ctx, false, "start", unit); err != nil {
		state := n.state(ctx, false, unit)
		return outcome{cell: "start failed: " + state,
			why: fmt.Sprintf("%s is %s, want active; systemctl start: %v; payload: %s", unit, state, err, n.eventLog(name))}
	}
	pid := n.prop(ctx, false, unit, "MainPID")
	sleepCtx(ctx, 3*nativeWatchdog+nativeWatchdog/4)
	state, now, restarts := n.state(ctx, false, unit), n.prop(ctx, false, unit, "MainPID"), n.prop(ctx, false, unit, "NRestarts")
	if state == "active" && now == pid && restarts == "0" {
		return outcome{cell: fmt.Sprintf("active after 3× WatchdogSec (%s)", n.eventLog(name)), ok: true}
	}
	return outcome{cell: "after 3× WatchdogSec: " + state,
		why: fmt.Sprintf("%s after 3× WatchdogSec: %s, main pid %s (was %s), %s restarts; want active; payload: %s",
			unit, state, now, pid, restarts, n.eventLog(name))}
}

// socket: a client of the socket unit gets COMMAND's reply.
func (n *native) socket(ctx context.Context, v nativeVariant) outcome {
	name := nativeName("socket", v)
	if _, err := n.ctl(ctx, false, "start", name+".socket"); err != nil {
		return outcome{cell: "socket unit failed", why: err.Error()}
	}
	reply, err := n.try(ctx, "env", "CLIENT_TIMEOUT=5", "/usr/bin/python3", "/opt/reaper-test/native.py", "client", nativeSocket(v))
	if err == nil && strings.HasPrefix(reply, "pong from ") {
		return outcome{cell: "the client gets COMMAND's reply", ok: true}
	}
	return outcome{cell: "no reply: " + n.eventLog(name),
		why: fmt.Sprintf("the client got %q (%v), want COMMAND's pong; payload: %s", reply, err, n.eventLog(name))}
}

// reload: after systemctl reload the unit is active, its main process the
// same, and COMMAND saw the HUP.
func (n *native) reload(ctx context.Context, v nativeVariant) outcome {
	name := nativeName("reload", v)
	unit := name + ".service"
	if _, err := n.ctl(ctx, false, "start", unit); err != nil {
		return outcome{cell: "start failed", why: err.Error()}
	}
	if _, ok := n.waitEvent(ctx, name, "up", itest.Deadline); !ok {
		return outcome{cell: "COMMAND never up", why: "no 'up' from the payload: " + n.eventLog(name)}
	}
	pid := n.prop(ctx, false, unit, "MainPID")
	if _, err := n.ctl(ctx, false, "reload", unit); err != nil {
		return outcome{cell: "reload failed: " + n.state(ctx, false, unit), why: err.Error()}
	}
	_, hup := n.waitEvent(ctx, name, "hup", 10*time.Second)
	// A reaper that took the HUP for a stop has ended by then: its grace
	// is one second.
	sleepCtx(ctx, 3*time.Second)
	state, now := n.state(ctx, false, unit), n.prop(ctx, false, unit, "MainPID")
	alive := false
	for _, p := range n.payload(name) {
		alive = alive || strings.HasPrefix(p.cmdline, "/usr/bin/python3 ") // COMMAND, not reaper
	}
	if hup && alive && state == "active" && now == pid {
		return outcome{cell: "reloads: COMMAND saw the HUP, active", ok: true}
	}
	cell := fmt.Sprintf("after reload: %s, COMMAND saw the HUP: %v, COMMAND alive: %v", state, hup, alive)
	return outcome{cell: cell, why: fmt.Sprintf("%s (main pid %s, was %s); want active, the HUP seen, COMMAND alive; payload: %s",
		cell, now, pid, n.eventLog(name))}
}

// stop: the stop ends with Result=success, and nothing of the unit is
// left (alone, the escapee is: that is the baseline).
func (n *native) stop(ctx context.Context, v nativeVariant) outcome {
	name := nativeName("stop", v)
	unit := name + ".service"
	if _, err := n.ctl(ctx, false, "start", unit); err != nil {
		return outcome{cell: "start failed", why: err.Error()}
	}
	if err := n.escapeeUp(ctx, false, unit, name); err != nil {
		return outcome{cell: "COMMAND never up", why: err.Error()}
	}
	_, stopErr := n.ctl(ctx, false, "stop", unit)
	_, left := n.runs(name)
	results, err := n.stopResults(ctx, false, unit, 1)
	if err != nil || stopErr != nil {
		return outcome{cell: "no result", why: fmt.Sprintf("systemctl stop: %v; %v", stopErr, err)}
	}
	cell := fmt.Sprintf("Result=%s, %d left %q", results[0], len(left), left)
	if v.name == "base" {
		ok := strings.HasPrefix(results[0], "success") && len(left) > 0
		return outcome{cell: cell, ok: ok, why: cell + "; want Result=success and the escapee left"}
	}
	ok := strings.HasPrefix(results[0], "success") && len(left) == 0
	return outcome{cell: cell, ok: ok, why: cell + "; want Result=success and nothing left"}
}

// startUserManager makes the user and starts its manager once, as for a
// lingering user: loginctl enable-linger (D-Bus and logind are activated
// on demand), then systemctl start user@UID, which waits for the manager
// logind starts.
func (n *native) startUserManager(ctx context.Context) error {
	n.userOnce.Do(func() {
		uid := strconv.Itoa(nativeUID)
		for _, argv := range [][]string{
			{"groupadd", "--gid", uid, nativeUser},
			{"useradd", "--create-home", "--uid", uid, "--gid", uid, nativeUser},
			{"loginctl", "enable-linger", nativeUser},
			{"systemctl", "start", "user@" + uid + ".service"},
		} {
			if _, err := n.try(ctx, argv...); err != nil {
				n.userErr = err
				return
			}
		}
	})
	return n.userErr
}

// user: a user manager's unit with KillMode=process, restarted three times,
// then stopped. After each restart exactly one run of it has processes;
// after the stop none has, and the stop's Result is success. Alone, each
// run leaves its escapee: 2, 3 and 4 runs after the restarts.
func (n *native) user(ctx context.Context, v nativeVariant) outcome {
	name := nativeName("user", v)
	unit := name + ".service"
	if err := n.startUserManager(ctx); err != nil {
		return outcome{cell: "no user manager", why: err.Error()}
	}
	if _, err := n.ctl(ctx, true, "start", unit); err != nil {
		return outcome{cell: "start failed", why: err.Error()}
	}
	if err := n.escapeeUp(ctx, true, unit, name); err != nil {
		return outcome{cell: "COMMAND never up", why: err.Error()}
	}
	var counts []int
	for i := 0; i < 3; i++ {
		if _, err := n.ctl(ctx, true, "restart", unit); err != nil {
			return outcome{cell: fmt.Sprintf("restart %d failed", i+1), why: err.Error()}
		}
		if err := n.escapeeUp(ctx, true, unit, name); err != nil {
			return outcome{cell: fmt.Sprintf("COMMAND never up after restart %d", i+1), why: err.Error()}
		}
		runs, _ := n.runs(name)
		counts = append(counts, len(runs))
	}
	_, stopErr := n.ctl(ctx, true, "stop", unit)
	_, left := n.runs(name)
	results, err := n.stopResults(ctx, true, unit, 4)
	if err != nil || stopErr != nil {
		return outcome{cell: "no result", why: fmt.Sprintf("systemctl --user stop: %v; %v", stopErr, err)}
	}
	last := results[len(results)-1]
	cell := fmt.Sprintf("instances after each restart %v, %d processes left after the stop, Result=%s", counts, len(left), last)
	if v.name == "base" {
		ok := slices.Equal(counts, []int{2, 3, 4}) && len(left) > 0 && strings.HasPrefix(last, "success")
		return outcome{cell: cell, ok: ok, why: cell + "; want [2 3 4], leftovers and Result=success"}
	}
	ok := slices.Equal(counts, []int{1, 1, 1}) && len(left) == 0 && strings.HasPrefix(last, "success")
	return outcome{cell: cell, ok: ok, why: fmt.Sprintf("%s; want [1 1 1], nothing left and Result=success (left: %q; results: %q)", cell, left, results)}
}
