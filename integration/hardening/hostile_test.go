package hardening

// Hostile input (issue 29): what other processes and other users control
// must not steer reaper: the names in its log, the --report file, escapes
// from its tree without a cgroup.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/reaper-init/reaper/integration/itest"
	"golang.org/x/sys/unix"
)

// forged are argv entries that would forge or hide log lines were they
// written raw: a fake line, a carriage return over a real one, cursor
// moves, a C1 CSI (in UTF-8 and as the raw byte of 8-bit terminals), DEL,
// invalid UTF-8.
var forged = []string{
	"\nreaper: warning: killed pid=1 command=/sbin/init",
	"\rreaper: info: teardown: 1 descendants, 1 exited after SIGTERM, 0 killed",
	"\x1b[1C\x1b[1C\x1b[2K\x1b]0;owned\x07",
	"\u009b2K",
	"\x9b2K",
	"\x7f\x7f",
	"\xff\xfe\xc0\x80",
}

// forgedName is a program name made of escape sequences: the comm of a
// process started through a link of that name is it.
const forgedName = "\x1b[1C\u009b\r"

// forgingHelper returns a link to the helper named forgedName, in a
// directory of the test's.
func forgingHelper(t *testing.T) string {
	t.Helper()
	link := filepath.Join(t.TempDir(), forgedName)
	if err := os.Symlink(itest.Bin().Helper, link); err != nil {
		t.Fatal(err)
	}
	return link
}

// checkLog fails the test unless stderr, read byte by byte, is lines of
// printable UTF-8 (no control byte but the newline ending each line, no DEL,
// no C1 control), each a line of reaper's own: "reaper: ..." or a JSON
// object. It returns the lines.
func checkLog(t *testing.T, stderr []byte, json bool) []string {
	t.Helper()
	if !utf8.Valid(stderr) {
		t.Errorf("invalid UTF-8 on stderr: %q", stderr)
	}
	for i, r := range string(stderr) {
		if r != '\n' && (r < 0x20 || r == 0x7f || r >= 0x80 && r <= 0x9f || r == utf8.RuneError) {
			t.Errorf("byte %d of stderr is %U, raw: %q", i, r, stderr)
			break
		}
	}
	if len(stderr) == 0 || stderr[len(stderr)-1] != '\n' {
		t.Errorf("stderr does not end a line: %q", stderr)
	}
	lines := strings.Split(strings.TrimSuffix(string(stderr), "\n"), "\n")
	for _, line := range lines {
		if json && !strings.HasPrefix(line, "{") || !json && !strings.HasPrefix(line, "reaper: ") {
			t.Errorf("a line that is not reaper's: %q\nstderr: %q", line, stderr)
		}
		if strings.HasPrefix(line, "reaper: warning: killed pid=1 ") {
			t.Errorf("a forged line: %q", line)
		}
	}
	return lines
}

func TestForgedNamesCannotForgeTheLog(t *testing.T) {
	evil := forgingHelper(t)
	for _, format := range []string{"console", "json"} {
		t.Run(format, func(t *testing.T) {
			t.Run("descendant", func(t *testing.T) { forgedDescendant(t, evil, format) })
			t.Run("port holder", func(t *testing.T) { forgedPortHolder(t, evil, format) })
		})
	}
}

// forgedDescendant runs a descendant named evil whose argv holds every
// forged entry and which ignores SIGTERM: reaper names it as it signals it
// (-vv: its comm) and as it kills it (its command line).
func forgedDescendant(t *testing.T, evil, format string) {
	rec, gate := itest.NewFIFO(t, "rec"), itest.NewFIFO(t, "gate")
	ctx, cancel := context.WithTimeout(context.Background(), itest.Deadline)
	defer cancel()
	script := `"$EVIL" record -stay "$R" "$@" & read x < "$G"`
	args := append([]string{"-vv", "--log-format=" + format, "--grace=200ms", "--", "sh", "-c", script, "sh"}, forged...)
	cmd := exec.CommandContext(ctx, itest.Bin().Reaper, args...)
	cmd.Env = append(os.Environ(), "EVIL="+evil, "R="+rec.Path, "G="+gate.Path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var pid int
	if _, err := fmt.Sscanf(rec.Next(t), "ready %d", &pid); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	defer unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0) // should reaper leave it
	gate.File.Write([]byte("go\n"))
	if err := cmd.Wait(); err != nil {
		t.Fatalf("reaper: %v\n%q", err, stderr.Bytes())
	}
	lines := checkLog(t, stderr.Bytes(), format == "json")
	cmdline := strings.Join(append([]string{evil, "record", "-stay", rec.Path}, forged...), " ")
	killed, signalled := false, false
	for _, line := range lines {
		if format == "console" {
			killed = killed || line == fmt.Sprintf("reaper: warning: killed pid=%d command=%s", pid, strconv.Quote(cmdline))
			signalled = signalled || strings.Contains(line, fmt.Sprintf("signalled pid=%d comm=%s signal=SIGTERM", pid, strconv.Quote(forgedName)))
			continue
		}
		var entry map[string]any
		if err := json.Unmarshal([]byte(line), &entry); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		// What is valid UTF-8 reads back unchanged (the rest as U+FFFD).
		killed = killed || entry["msg"] == "killed" && entry["pid"] == float64(pid) &&
			strings.HasPrefix(entry["command"].(string), strings.Join(append([]string{evil, "record", "-stay", rec.Path}, forged[:4]...), " "))
		signalled = signalled || entry["msg"] == "signalled" && entry["pid"] == float64(pid) && entry["comm"] == forgedName
	}
	if !killed || !signalled {
		t.Errorf("no line names pid %d as killed (%v) and signalled (%v), escaped:\n%s", pid, killed, signalled, stderr.Bytes())
	}
}

// forgedPortHolder makes a listener named evil, with the forged entries in
// its argv, hold the port reaper waits for: reaper names it while it waits
// and in the error when it gives up.
func forgedPortHolder(t *testing.T, evil, format string) {
	addr, ready := itest.FreeAddr(t), itest.NewFIFO(t, "listening")
	holder := exec.Command(evil, append([]string{"listen", addr, ready.Path}, forged...)...)
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer holder.Wait()
	defer holder.Process.Kill()
	ready.Next(t)
	code, _, stderr := itest.RunReaper(t, nil, "--log-format="+format, "--wait-port="+itest.PortOf(addr), "--wait-port-timeout=100ms", "true")
	if code != 2 {
		t.Errorf("exit %d, want 2", code)
	}
	lines := checkLog(t, []byte(stderr), format == "json")
	if len(lines) != 2 || !strings.Contains(lines[0], "port is held") || !strings.Contains(lines[1], fmt.Sprintf("still held by pid %d", holder.Process.Pid)) {
		t.Errorf("want a warning and an error naming holder %d:\n%s", holder.Process.Pid, stderr)
	}
	if format == "console" && !strings.Contains(stderr, `\nreaper: warning: killed pid=1 command=/sbin/init \rreaper: info`) {
		t.Errorf("the holder's command line is not escaped visibly:\n%s", stderr)
	}
}

// protectedSysctls reads the fs.protected_* settings, which guard files in
// sticky world-writable directories only.
func protectedSysctls() string {
	var s []string
	for _, name := range []string{"symlinks", "hardlinks", "fifos", "regular"} {
		v, err := os.ReadFile("/proc/sys/fs/protected_" + name)
		if err != nil {
			s = append(s, name+"=?")
			continue
		}
		s = append(s, name+"="+strings.TrimSpace(string(v)))
	}
	return "fs.protected_" + strings.Join(s, " fs.protected_")
}

// TestPlantedReportPath: another user plants something at the --report
// path, in a world-writable directory that is not sticky (a shared CI
// workspace), before a root reaper ends: it ends promptly all the same,
// with COMMAND's status and its lock released, writes nothing through
// what was planted, and leaves its report, mode 0600, in its place (or,
// for a directory, one error line).
func TestPlantedReportPath(t *testing.T) {
	itest.RequireRoot(t)
	t.Logf("%s (they apply to sticky directories only: this one is not)", protectedSysctls())
	ws := filepath.Join(itest.SharedDir(t), "workspace")
	if err := os.Mkdir(ws, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(ws, 0o777); err != nil { // past the umask, and not sticky
		t.Fatal(err)
	}
	target := filepath.Join(t.TempDir(), "precious")
	if err := os.WriteFile(target, []byte("precious\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	report := filepath.Join(ws, "report.json")
	cases := []struct {
		name  string
		plant []string // run as nobody
		dir   bool     // a directory: the report cannot be written
	}{
		{"fifo", []string{"mkfifo", "-m", "666", report}, false},
		{"symlink", []string{"ln", "-s", target, report}, false},
		{"another user's file", []string{"sh", "-c", `umask 0; echo hers > "$0"`, report}, false},
		{"directory", []string{"mkdir", "-m", "777", report}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Cleanup(func() { os.RemoveAll(report) })
			if code, out := itest.AsNobodyRun(t, nil, c.plant...); code != 0 {
				t.Fatalf("planting %v: exit %d %s", c.plant, code, out)
			}
			var planted syscall.Stat_t
			if err := syscall.Lstat(report, &planted); err != nil {
				t.Fatal(err)
			}
			var hers *os.File
			if c.name == "another user's file" {
				hers, _ = os.Open(report) // root looks; what she sees stays hers
				defer hers.Close()
			}
			name := itest.InstanceName(t)
			code, _, stderr := itest.RunReaper(t, nil, "--instance="+name, "--report="+report, "sh", "-c", "exit 7")
			if code != 7 {
				t.Errorf("exit %d, want COMMAND's 7\n%s", code, stderr)
			}
			if code, _, stderr := itest.RunReaper(t, nil, "--instance="+name, "true"); code != 0 {
				t.Errorf("the next run of the instance: exit %d, want 0 (the lock released)\n%s", code, stderr)
			}
			if data, _ := os.ReadFile(target); string(data) != "precious\n" {
				t.Errorf("the symbolic link's target was written: %q", data)
			}
			if hers != nil {
				if data, _ := io.ReadAll(hers); string(data) != "hers\n" {
					t.Errorf("another user's file was written into: %q", data)
				}
			}
			var now syscall.Stat_t
			if err := syscall.Lstat(report, &now); err != nil {
				t.Fatal(err)
			}
			if c.dir {
				if lines := strings.Count(stderr, "\n"); lines != 1 || !strings.Contains(stderr, "cannot write report "+report) ||
					now.Ino != planted.Ino {
					t.Errorf("a directory at the path: want it left and one error line, got:\n%s", stderr)
				}
				return
			}
			if stderr != "" {
				t.Errorf("stderr: %s", stderr)
			}
			if now.Ino == planted.Ino || now.Mode != syscall.S_IFREG|0o600 || now.Uid != 0 {
				t.Fatalf("at the path: inode %d mode %o uid %d; want a new regular file of root's, mode 0600 (planted: inode %d)",
					now.Ino, now.Mode, now.Uid, planted.Ino)
			}
			var r struct {
				ExitCode int `json:"exit_code"`
			}
			if data, err := os.ReadFile(report); err != nil || json.Unmarshal(data, &r) != nil || r.ExitCode != 7 {
				t.Errorf("report %q (%v): want exit_code 7", data, err)
			}
			if left, _ := filepath.Glob(filepath.Join(ws, ".report.json.reaper-*")); len(left) > 0 {
				t.Errorf("temporary files left: %v", left)
			}
		})
	}
}

// bypassForms are testdata/bypass.py's forms, and what reaper -v logs it
// removed from each ("" where the relay removes nothing but the text
// after a NUL).
var bypassForms = []struct{ form, removed string }{
	{"cr-after", "MAINPID"},
	{"cr-before", "MAINPID"},
	{"nul", ""},
	{"escaped", "MAINPID"},
	{"notifyaccess", "NOTIFYACCESS"},
	{"unprivileged", "MAINPID"},
}

// bypassUnit runs testdata/bypass.py under wrap (reaper, or nothing), its
// victim's pid read from pidfile.
func bypassUnit(wrap, form, pidfile string) string {
	return fmt.Sprintf(`[Unit]
StartLimitIntervalSec=0

[Service]
Type=notify
ExecStart=%s/usr/bin/python3 /opt/reaper-test/bypass.py %s %s
TimeoutStartSec=10s
TimeoutStopSec=3s
Delegate=yes
`, wrap, form, pidfile)
}

// TestNotifyRelayBypass: in a real systemd 252, a Type=notify unit runs
// reaper around a COMMAND (or a descendant that dropped to user nobody)
// that sends each form of datagram that used to get MAINPID= past the
// relay, naming the process of another unit. The unit becomes active
// (READY=1 arrives), its main pid stays reaper's, and systemctl stop
// leaves the other unit's process alone: not signalled, same pid. The
// baseline, the same payload as ExecStart= itself, shows that systemd
// takes such a datagram from a unit's main process.
func TestNotifyRelayBypass(t *testing.T) {
	itest.RequirePython(t) // the payloads' interpreter
	const dir = "/opt/reaper-test"
	spec := itest.BootSpec{
		Units: map[string]string{
			"reaper-bypass@.service": bypassUnit(dir+"/reaper -v --grace=1s -- ", "%i", dir+"/victim.pid"),
			"bypass-base.service":    bypassUnit("", "cr-after", dir+"/victim-base.pid"),
		},
		Opt: map[string][]byte{"bypass.py": itest.MustRead(t, "testdata/bypass.py"), "helper": itest.MustRead(t, itest.Bin().Helper)},
	}
	ct := itest.BootSystemdWith(t, spec)
	// victim starts a unit of its own whose process records every signal
	// it gets in the container's /run/NAME.log, and returns its pid.
	victim := func(name string) (pid int, signals func() []string) {
		log := "/run/" + name + ".log"
		host := fmt.Sprintf("/proc/%d/root%s", ct.Init, log)
		if err := os.WriteFile(host, nil, 0o666); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), itest.BootDeadline)
		defer cancel()
		if out, err := ct.Command(ctx, "systemd-run", "--unit="+name, dir+"/helper", "record", "-stay", log).CombinedOutput(); err != nil {
			t.Fatalf("systemd-run: %v %s", err, out)
		}
		signals = func() []string {
			data, _ := os.ReadFile(host)
			return strings.Fields(string(data))
		}
		for len(signals()) == 0 { // "ready PID": its handlers are in place
			if ctx.Err() != nil {
				t.Fatalf("%s never got ready", name)
			}
			time.Sleep(20 * time.Millisecond)
		}
		pid, _ = strconv.Atoi(ct.Show(t, name+".service", "MainPID"))
		if got := signals(); len(got) != 2 || got[1] != strconv.Itoa(pid) {
			t.Fatalf("%s: MainPID %d, its log %q", name, pid, got)
		}
		return pid, signals
	}
	start := func(unit string) error {
		ctx, cancel := context.WithTimeout(context.Background(), itest.BootDeadline)
		defer cancel()
		out, err := ct.Command(ctx, "systemctl", "start", unit).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}

	// The baseline: systemd moves the main pid to the victim.
	basePID, baseSignals := victim("reaper-victim-base")
	ct.Install(t, "victim-base.pid", []byte(strconv.Itoa(basePID)), 0o644)
	if err := start("bypass-base.service"); err != nil {
		t.Fatalf("baseline: %v", err)
	}
	if main := ct.Show(t, "bypass-base.service", "MainPID"); main != strconv.Itoa(basePID) {
		t.Errorf("baseline: MainPID %s after READY=1\\rMAINPID=%d from the main process: the test cannot tell a bypass", main, basePID)
	}
	ct.Systemctl(t, "stop", "bypass-base.service")
	t.Logf("baseline, COMMAND alone: systemctl stop sent the other unit's process %q", baseSignals()[2:])

	pid, signals := victim("reaper-victim")
	ct.Install(t, "victim.pid", []byte(strconv.Itoa(pid)), 0o644)
	for _, f := range bypassForms {
		unit := "reaper-bypass@" + f.form + ".service"
		if err := start(unit); err != nil {
			t.Errorf("%s: READY=1 did not arrive: %v\n%s", f.form, err, ct.Journal(t, unit))
			continue
		}
		// (ExecMainPID would follow MainPID: the container's /proc tells.)
		main := ct.Show(t, unit, "MainPID")
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/root/proc/%s/cmdline", ct.Init, main))
		if main == strconv.Itoa(pid) || !strings.HasPrefix(string(cmdline), dir+"/reaper\x00") {
			t.Errorf("%s: MainPID %s (%q), want reaper's (the victim is %d)", f.form, main, cmdline, pid)
		}
		ct.Systemctl(t, "stop", unit)
		journal := ct.Journal(t, unit)
		if f.removed != "" && !strings.Contains(journal, "removed="+f.removed) {
			t.Errorf("%s: reaper did not log that it removed %s:\n%s", f.form, f.removed, journal)
		}
		if got := signals(); len(got) != 2 || ct.Show(t, "reaper-victim.service", "MainPID") != strconv.Itoa(pid) {
			t.Errorf("%s: the other unit's process got %q, its unit's MainPID is %s (was %d)", f.form, got[2:],
				ct.Show(t, "reaper-victim.service", "MainPID"), pid)
		}
	}
}

// TestNamespaceEscapeIsStopped: without a cgroup (an unprivileged reaper
// here), a user holds a user and PID namespace outside the run; her
// COMMAND enters it with nsenter and forks there. The child is reparented
// to that namespace's init, out of reaper's tree; it still carries the
// run's marker, and reaper stops it at the end of the run (SIGTERM, which
// it records and exits on), with a warning that says how it escaped.
func TestNamespaceEscapeIsStopped(t *testing.T) {
	init := namespaceHolder(t)
	rec := itest.NewFIFO(t, "escapee")
	escapee, log := runNamespaceEscape(t, init, rec, `"$HELPER" record "$R"`, "--grace=5s")
	if got, err := rec.TryNext(time.Second); got != "SIGTERM" {
		t.Errorf("the escapee got %q (%v), want SIGTERM (it exits on it)\n%s", got, err, log)
	}
	how := fmt.Sprintf(`pid=%d command="%s record %s" how="left reaper's tree: another PID namespace" signal=SIGTERM`, escapee, itest.Bin().Helper, rec.Path)
	if !strings.Contains(log, how) {
		t.Errorf("no warning names escapee %d and how it escaped:\n%s", escapee, log)
	}
}

// TestNamespaceEscapeGetsTheGrace: an escapee found at the end of the run
// gets the run's grace period (its default, 5 s, here) to act on the stop
// signal before SIGKILL: one that takes a second to shut down finishes.
func TestNamespaceEscapeGetsTheGrace(t *testing.T) {
	init := namespaceHolder(t)
	rec := itest.NewFIFO(t, "escapee")
	// The trap interrupts wait; the shutdown takes a second.
	escapee := `trap 'echo SIGTERM > "$R"; sleep 1; echo done > "$R"; exit 0' TERM; echo "ready $$" > "$R"; sleep 1000 & wait`
	pid, log := runNamespaceEscape(t, init, rec, `sh -c '`+strings.ReplaceAll(escapee, `'`, `'\''`)+`'`)
	for _, want := range []string{"SIGTERM", "done"} {
		if got, err := rec.TryNext(time.Second); got != want {
			t.Errorf("the escapee wrote %q (%v), want %q: killed before the end of the grace period\n%s", got, err, want, log)
		}
	}
	// The escapee's own pid only: a child of its shell (the background
	// sleep, the trap's sleep) that the SIGTERM catches between its fork
	// and its exec loses it to the shell's handler, which it still has,
	// and is rightly SIGKILLed at the end of the grace period (seen on a
	// loaded machine).
	if regexp.MustCompile(fmt.Sprintf(`warning: killed escapee of this run [^\n]*pid=%d `, pid)).MatchString(log) {
		t.Errorf("reaper SIGKILLed the escapee (pid %d) within the grace period:\n%s", pid, log)
	}
}

// namespaceHolder starts a user and PID namespace held by nobody (unshare
// as nobody, its init a sleep), and returns its init's pid; the test's end
// SIGKILLs that init, and with it the namespace.
func namespaceHolder(t *testing.T) int {
	t.Helper()
	nobody := itest.AsNobody(t)[:len(itest.AsNobody(t))-1] // setpriv ... --
	held := itest.NewFIFO(t, "held")
	holder := exec.Command(nobody[0], append(nobody[1:], "unshare", "-Urpf", "--mount-proc", "sh", "-c",
		`echo "held $$" > "$0"; exec sleep 1000`, held.Path)...)
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	var init int
	t.Cleanup(func() {
		if init != 0 {
			syscall.Kill(init, syscall.SIGKILL) // the namespace's init: the kernel kills the rest of it
		}
		holder.Process.Kill()
		holder.Wait()
	})
	if line := held.Next(t); line != "held 1" {
		t.Fatalf("the holder wrote %q, want held 1", line)
	}
	if kids := itest.ChildrenOf(holder.Process.Pid); len(kids) == 1 {
		init = kids[0]
	} else {
		t.Fatalf("unshare has children %v", kids)
	}
	return init
}

// runNamespaceEscape runs reaper as nobody, without a cgroup, with a
// COMMAND that enters the namespace of init and starts escapee there in
// the background (escapee writes "ready PID", PID as its namespace sees
// it, to $R, rec); once the escapee is up, out of reaper's tree, COMMAND
// exits. It returns the escapee's pid and reaper's stderr, once reaper
// has exited 0 with a warning about an escapee of the run.
func runNamespaceEscape(t *testing.T, init int, rec *itest.FIFO, escapee string, flags ...string) (int, string) {
	t.Helper()
	nobody := itest.AsNobody(t)[:len(itest.AsNobody(t))-1]
	gate := itest.NewFIFO(t, "gate")
	ctx, cancel := context.WithTimeout(context.Background(), itest.Deadline)
	defer cancel()
	script := `nsenter --preserve-credentials -U -p -t "$HOLDER" sh -c "$ESCAPEE &"; read x < "$G"`
	args := append(append(append(nobody[1:], itest.Bin().Reaper, "--cgroup=off"), flags...), "sh", "-c", script)
	cmd := exec.CommandContext(ctx, nobody[0], args...)
	cmd.Env = append(os.Environ(), "HOLDER="+strconv.Itoa(init), "HELPER="+itest.Bin().Helper, "R="+rec.Path, "G="+gate.Path, "ESCAPEE="+escapee)
	// A file, not a pipe: an escapee that outlives reaper would hold a
	// pipe open, and Wait with it.
	stderr, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line := rec.Next(t)
	pid := itest.FirstBelow(init, func(pid int) bool {
		ns, _ := itest.InnermostPID(pid)
		return "ready "+strconv.Itoa(ns) == line
	})
	if pid == 0 || slices.Contains(descendants(cmd.Process.Pid), pid) {
		t.Fatalf("no escapee below the namespace's init %d (%q), or it is still below reaper", init, line)
	}
	gate.File.Write([]byte("go\n"))
	err = cmd.Wait()
	log, _ := os.ReadFile(stderr.Name())
	if err != nil {
		t.Errorf("reaper: %v\n%s", err, log)
	}
	if want := fmt.Sprintf(`reaper: warning: escapee of this run instance=run-%d-`, cmd.Process.Pid); !strings.Contains(string(log), want) {
		t.Errorf("no warning about an escapee of this run:\n%s", log)
	}
	return pid, string(log)
}

// descendants lists the processes below pid.
func descendants(pid int) []int {
	var all []int
	for _, child := range itest.ChildrenOf(pid) {
		all = append(append(all, child), descendants(child)...)
	}
	return all
}

// TestNestedReaperKeepsTheOuterMarker: a reaper below a reaper keeps the
// outer run's marker beside its own. When the outer one, in /proc mode, is
// SIGKILLed (the inner dies of its parent-death signal, and so does its
// COMMAND), the next start of the outer instance still finds what the
// inner run started and stops it.
func TestNestedReaperKeepsTheOuterMarker(t *testing.T) {
	cg := itest.SharedCgroup(t, 128)
	name := itest.InstanceName(t)
	// --guardian=off, both: the next start's sweep is what this tests.
	first := itest.Plant(t, false, itest.Tree{Flags: []string{"--cgroup=off", "--guardian=off", "--instance=" + name, itest.Bin().Reaper,
		"--cgroup=off", "--guardian=off", "--"},
		Ups: 1, Body: `setsid sh -c "$LEAF" &`, Cgroup: cg, Leave: true})
	left := itest.Pidfds(t, first.Ups)
	env, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", first.Ups[0]))
	t.Logf("the inner run's leaf has %s", regexp.MustCompile(`REAPER_INSTANCE=[^\x00]*`).Find(env))
	first.Signal(syscall.SIGKILL)
	first.Wait()
	if alive := itest.Running(left, first.Ups); len(alive) != 1 {
		t.Fatalf("the killed reapers left %v running; the test needs the inner run's leaf", alive)
	}
	second := itest.Start(t, itest.Opts{Cgroup: cg, Args: []string{"--instance=" + name, "--cgroup=off", "--grace=1s", "true"}})
	r := second.Wait()
	if alive := itest.Running(left, first.Ups); len(alive) > 0 {
		t.Errorf("the inner run's leaf still runs: %v\n%s", alive, r.Stderr)
	}
	if !regexp.MustCompile(fmt.Sprintf(`warning: leftover of an earlier run instance=%s pid=%d `, regexp.QuoteMeta(name), first.Ups[0])).
		MatchString(r.Stderr) {
		t.Errorf("no warning names the inner run's leaf %d:\n%s", first.Ups[0], r.Stderr)
	}
}
