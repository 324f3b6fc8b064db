package itest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

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

// servicePayload is a service's wrapper script, as in the port-18789 bug:
// it starts a daemon that leaves its session and ignores SIGTERM, and a
// worker in the background, then waits for them.
const servicePayload = `#!/bin/sh
setsid sh -c 'trap "" TERM; exec sleep 1001' </dev/null >/dev/null 2>&1 &
sleep 1002 &
wait
`

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
