package integration

// Real deployments, each where it runs: the image built from the Dockerfile
// by podman and stopped with `podman stop`, reaper as podman's --init,
// reaper as a systemd service's ExecStart in a real systemd booted with
// systemd-nspawn, and reaper around a CI job.

import (
	"bytes"
	"context"
	"debug/buildinfo"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/reaper-init/reaper/reaper"
	"github.com/reaper-init/reaper/reaper/cgroup"
)

// Payload of the container tests: COMMAND exits 7 on SIGTERM; it leaves a
// daemon in a session of its own, which notes the SIGTERM it gets in /w/log,
// and a background child. Each announces itself on /w/events.
const containerPayload = `trap 'exit 7' TERM
setsid sh -c 'trap "echo daemon-term >> /w/log; exit 0" TERM; echo "daemon $$" > /w/events; sleep 300 & wait' &
echo "command $$" > /w/events
sleep 300 &
wait`

func TestImageBuildRunStop(t *testing.T) {
	e := newPodman(t)
	golang := dockerfileBase(t)
	e.importGolang(t, golang)
	image := "localhost/reaper-deploy-test:latest"
	began := time.Now()
	e.mustRun(t, append([]string{"build", "--isolation=chroot", "--pull=never", "--layers=false", "--network=host",
		"-v", goEnv(t, "GOMODCACHE") + ":/go/pkg/mod", "-v", goEnv(t, "GOCACHE") + ":/root/.cache/go-build",
		"-t", image, "-f", "Dockerfile"}, repoRoot(t))...)
	t.Logf("podman build: %v", time.Since(began).Round(time.Millisecond))

	// The binary in the image: static, stripped, built as documented.
	e.mustRun(t, "create", "--name=reaper-extract", image)
	extracted := filepath.Join(e.dir, "reaper-from-image")
	e.mustRun(t, "cp", "reaper-extract:/reaper", extracted)
	e.mustRun(t, "rm", "reaper-extract")
	if err := staticELF(extracted); err != nil {
		t.Errorf("/reaper in the image: %v", err)
	}
	if err := documentedBuild(extracted); err != nil {
		t.Errorf("/reaper in the image: %v", err)
	}

	// `podman stop`: SIGTERM to PID 1, reaper; COMMAND's status; the daemon
	// stopped by reaper, gracefully, before reaper exited.
	c := e.runPayload(t, "image", []string{"-e", "REAPER_VERBOSE=1", "-v", busyboxBin(t) + ":/bin:ro"}, image)
	c.stop(t)
	c.expect(t, 7)
}

func TestDockerInitDropIn(t *testing.T) {
	// The init binary dockerd and podman run: `--version` as dockerd parses it.
	link := filepath.Join(t.TempDir(), "docker-init")
	if err := os.Symlink(bin().reaper, link); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runBinary(t, link, nil, "--version")
	if code != 0 || !regexp.MustCompile(`^tini version 0\.19\.0 - reaper \S+\n$`).MatchString(stdout) || stderr != "" {
		t.Errorf("docker-init --version: exit %d, %q, %q", code, stdout, stderr)
	}

	// podman run --init: podman mounts the init at /run/podman-init and runs
	// `/run/podman-init -- COMMAND`. TINI_VERBOSITY=2 (info) is read in tini
	// mode only: reaper's info lines show it took tini's command line.
	e := newPodman(t)
	rootfs := busyboxRoot(t)
	c := e.runPayload(t, "init", []string{"--init", "--init-path=" + bin().reaper, "-e", "TINI_VERBOSITY=2", "--rootfs"}, rootfs)
	c.stop(t)
	c.expect(t, 7)
	if !strings.Contains(c.stderr.String(), "reaper: info: started") {
		t.Errorf("no info line from reaper as podman-init (TINI_VERBOSITY=2):\n%s", c.stderr)
	}
}

func TestTiniParentDeathSignal(t *testing.T) {
	// tini -p SIGTERM: reaper gets SIGTERM when its parent dies, and stops
	// what runs below it.
	link := filepath.Join(t.TempDir(), "tini")
	if err := os.Symlink(bin().reaper, link); err != nil {
		t.Fatal(err)
	}
	events := newFIFO(t, "events")
	parent := exec.Command("sh", "-c", `"$TINI" -p SIGTERM -- sh -c 'echo "up $$" > "$F"; exec sleep 300' &
echo "reaper $!" > "$F"
read x`)
	parent.Env = append(os.Environ(), "TINI="+link, "F="+events.path)
	stdin, err := parent.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	pids := map[string]int{}
	for len(pids) < 2 {
		kind, pid, _ := strings.Cut(events.next(t), " ")
		pids[kind], _ = strconv.Atoi(pid)
	}
	fds := pidfds(t, []int{pids["reaper"], pids["up"]})
	t.Cleanup(func() {
		for _, fd := range fds {
			unix.PidfdSendSignal(fd, syscall.SIGKILL, nil, 0)
		}
	})
	stdin.Close() // the parent exits
	parent.Wait()
	if !allExit(fds, 10*time.Second) {
		t.Errorf("reaper (%d) or its child (%d) still runs after reaper's parent died", pids["reaper"], pids["up"])
	}
}

func TestExamplesKeepTheirTimeouts(t *testing.T) {
	read := func(name string) string { return string(mustRead(t, filepath.Join(repoRoot(t), name))) }
	seconds := func(name, text, pattern string) time.Duration {
		t.Helper()
		m := regexp.MustCompile(pattern).FindStringSubmatch(text)
		if m == nil {
			t.Fatalf("%s: nothing matches %s", name, pattern)
		}
		d, err := time.ParseDuration(m[1])
		if err != nil {
			d, err = time.ParseDuration(m[1] + "s")
		}
		if err != nil {
			t.Fatalf("%s: %q: %v", name, m[1], err)
		}
		return d
	}
	unit := read("examples/reaper-example.service")
	if grace, stop := seconds("unit", unit, `--grace=(\S+)`), seconds("unit", unit, `(?m)^TimeoutStopSec=(\S+)$`); stop <= grace {
		t.Errorf("examples/reaper-example.service: TimeoutStopSec=%v is not above --grace=%v", stop, grace)
	}
	for _, line := range []string{"Delegate=yes", "KillMode=mixed"} {
		if !regexp.MustCompile(`(?m)^` + line + `$`).MatchString(unit) {
			t.Errorf("examples/reaper-example.service: no %s", line)
		}
	}
	if strings.Contains(unit, "\nSuccessExitStatus=") {
		t.Error("examples/reaper-example.service: SuccessExitStatus= is not needed (reaper dies of the server's SIGTERM)")
	}
	for _, name := range []string{"examples/kubernetes-pod.yaml", "examples/kubernetes-pod-shared-pid.yaml"} {
		pod := read(name)
		if grace, period := seconds(name, pod, `"--grace=(\S+)"`), seconds(name, pod, `terminationGracePeriodSeconds: (\d+)`); period <= grace {
			t.Errorf("%s: terminationGracePeriodSeconds %v is not above --grace=%v", name, period, grace)
		}
	}
	for name, line := range map[string]string{
		"examples/github-actions.yml": `shell: reaper --timeout=\S+ .*--report=reaper.json -- bash --noprofile --norc -eo pipefail \{0\}\n\s+run: make test`,
		"examples/gitlab-ci.yml":      `reaper --timeout=\S+ .*--report=reaper.json -- make test`,
	} {
		if !regexp.MustCompile(line).MatchString(read(name)) {
			t.Errorf("%s: nothing matches %s", name, line)
		}
	}
	docker := read("Dockerfile")
	for _, want := range []string{"ENV CGO_ENABLED=0", "FROM scratch", `ENTRYPOINT ["/reaper", "--"]`,
		strings.TrimPrefix(preemptOff, "-ldflags=")} {
		if !strings.Contains(docker, want) {
			t.Errorf("Dockerfile: no %s", want)
		}
	}
}

func TestCIJobLeakingAServer(t *testing.T) {
	// As in examples/github-actions.yml: reaper --timeout=... --report=... --
	// JOB. The job starts a server in the background and fails with 3.
	addr := freeAddr(t)
	p := plant(t, false, tree{flags: []string{"--timeout=10m"}, ups: 1, exit: 3, leave: true,
		body: fmt.Sprintf(`"$HELPER" listen %s "$F" &`, addr)})
	p.release(t)
	r := p.wait()
	if l, err := net.Listen("tcp", addr); err != nil {
		t.Errorf("the server's port %s is still taken after the job: %v", addr, err)
	} else {
		l.Close()
	}
	p.expectClean(t, r, 3)
	if rep := p.readReport(t); rep.ExitCode != 3 || rep.Command == nil || rep.Teardown == nil {
		t.Errorf("report: %+v, want exit_code 3 and the teardown", rep)
	}

	// A job that hangs: --timeout stops it, and everything it started.
	t.Run("timeout", func(t *testing.T) {
		addr := freeAddr(t)
		p := plant(t, false, tree{flags: []string{"--timeout=1s"}, ups: 1,
			body: fmt.Sprintf(`"$HELPER" listen %s "$F" &`, addr)})
		r := p.wait()
		p.expectClean(t, r, reaper.ExitTimeout)
		if rep := p.readReport(t); !rep.TimedOut {
			t.Errorf("report: timed_out false")
		}
	})
}

// allExit waits until every pidfd is readable (its process gone), or
// timeout passes; it reports whether all are gone.
func allExit(fds []int, timeout time.Duration) bool {
	end := time.Now().Add(timeout)
	for _, fd := range fds {
		for {
			left := time.Until(end)
			if left <= 0 {
				return false
			}
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			n, err := unix.Poll(pfd, int(left.Milliseconds())+1)
			if n > 0 {
				break
			}
			if err != nil && !errors.Is(err, unix.EINTR) {
				return false
			}
		}
	}
	return true
}

// ---- podman ----------------------------------------------------------------

// podman is a private podman engine: its storage, state, temporary files and
// configuration under one temporary directory, and every command run in
// mount and cgroup namespaces of its own (see engineNS). Containers run
// with no network, in cgroups below a group the test makes and removes.
type podman struct {
	dir string
	ns  *engineNS
	cli []string // the groups podman itself runs in (builds included), below the namespace's root
	env []string
}

// newPodman starts a private podman, or skips the test when podman cannot
// run here. Every mount and cgroup podman and runc make stays in the
// engine's namespaces (no v1 memory hierarchy, /var/lib an empty directory
// of the test: podman keeps its blob cache in /var/lib/containers,
// whatever --root says), and ends with the test.
func newPodman(t *testing.T) *podman {
	t.Helper()
	requireRoot(t)
	for _, tool := range []string{"podman", "runc"} {
		if _, err := exec.LookPath(tool); err != nil {
			skip(t, "%s not installed (apt-get install podman runc): %v", tool, err)
		}
	}
	e := &podman{dir: t.TempDir()}
	for _, d := range []string{"root", "run", "tmp", "vartmp", "net"} {
		if err := os.Mkdir(filepath.Join(e.dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	conf := fmt.Sprintf(`[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "%[1]s/events.log"
image_copy_tmp_dir = "%[1]s/vartmp"
[network]
network_config_dir = "%[1]s/net"
`, e.dir)
	if err := os.WriteFile(filepath.Join(e.dir, "containers.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	e.env = append(os.Environ(), "CONTAINERS_CONF="+e.dir+"/containers.conf", "TMPDIR="+e.dir+"/vartmp")
	e.ns = newEngineNS(t, e.dir, "deploy")
	t.Cleanup(func() { e.close(t) })
	e.cli = e.ns.group(t, "cli")
	return e
}

// close removes every pod, container and image, then ends the namespaces and
// removes the cgroups once podman's last process (conmon, `podman
// container cleanup`) is gone.
func (e *podman) close(t *testing.T) {
	if e.cli != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		e.run(ctx, "pod", "rm", "--all", "--force", "--time=0")
		e.run(ctx, "rm", "--all", "--force", "--time=0")
		e.run(ctx, "rmi", "--all", "--force")
		cancel()
	}
	e.ns.close(t)
}

// run runs one podman command in the namespace and returns its output.
func (e *podman) run(ctx context.Context, args ...string) (string, error) {
	return outputOf(e.command(ctx, args...))
}

// command is a podman command line, run in the namespaces and in e.cli.
func (e *podman) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := e.ns.command(ctx, e.cli, append([]string{"podman",
		"--root=" + e.dir + "/root", "--runroot=" + e.dir + "/run", "--tmpdir=" + e.dir + "/tmp"}, args...)...)
	cmd.Env = e.env
	return cmd
}

// mustRun runs podman and fails the test on an error.
func (e *podman) mustRun(t *testing.T, args ...string) string {
	t.Helper()
	return mustSucceed(t, "podman", e.run, args...)
}

// importGolang imports the builder stage's base image (see golangRoot).
func (e *podman) importGolang(t *testing.T, name string) {
	t.Helper()
	root := golangRoot(t, name)
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	pipeInto(t, golangTar(ctx, t, root), e.command(ctx, importArgs("docker.io/library/"+name, golangChanges)...))
	t.Logf("%s imported from %s in %v", name, goEnv(t, "GOROOT"), time.Since(began).Round(time.Millisecond))
}

// golangChanges is the configuration of the golang base image, as in
// Docker's official image.
var golangChanges = []string{"ENV PATH=/usr/local/go/bin:/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"ENV GOPATH=/go", "ENV GOTOOLCHAIN=local", "WORKDIR /go"}

// golangRoot makes the root file system, but for the Go tree (see
// golangTar), of the builder stage's base image name ("golang:1.26"), as no
// registry is reachable: busybox, a root user whose HOME is /root, /tmp. It
// skips the test when this machine's Go is not the image's release.
func golangRoot(t *testing.T, name string) string {
	t.Helper()
	want, _, _ := strings.Cut(strings.TrimPrefix(name, "golang:"), "-")
	if v := strings.TrimPrefix(runtime.Version(), "go"); v != want && !strings.HasPrefix(v, want+".") {
		skip(t, "the Dockerfile builds with %s; this machine's Go is %s", name, runtime.Version())
	}
	root := t.TempDir()
	busyboxInto(t, filepath.Join(root, "bin"), "sh")
	for _, d := range []string{"etc", "root", "tmp"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	os.Chmod(filepath.Join(root, "tmp"), 0o1777)
	os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644)
	return root
}

// golangTar is the tar command that writes the golang image's root file
// system to its stdout: root's entries, and this machine's Go tree at
// /usr/local/go without what building a program does not need (the
// toolchain's own sources and tests, the tools go build never runs).
func golangTar(ctx context.Context, t *testing.T, root string) *exec.Cmd {
	t.Helper()
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"-c", "--exclude=testdata", "--exclude=*_test.go", "--exclude=./test", "--exclude=./doc",
		"--exclude=./api", "--exclude=./src/cmd", "--exclude=./pkg/tool/*/pprof", "--exclude=./pkg/tool/*/trace",
		"--exclude=./pkg/tool/*/fix", "--exclude=./pkg/tool/*/vet", "--exclude=./pkg/tool/*/doc",
		"--transform=s,^\\.,usr/local/go,", "-C", goEnv(t, "GOROOT"), ".", "-C", root}
	for _, e := range entries {
		args = append(args, e.Name())
	}
	return exec.CommandContext(ctx, "tar", args...)
}

// pipeInto runs src with its stdout as dst's stdin, and fails the test
// when either fails.
func pipeInto(t *testing.T, src, dst *exec.Cmd) {
	t.Helper()
	var srcErr, dstOut bytes.Buffer
	src.Stderr = &srcErr
	out, err := src.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	dst.Stdin = out
	dst.Stdout, dst.Stderr = &dstOut, &dstOut
	if err := src.Start(); err != nil {
		t.Fatal(err)
	}
	err = dst.Run()
	if srcWait := src.Wait(); err != nil || srcWait != nil {
		t.Fatalf("%s: %v; %s: %v\n%s%s", strings.Join(dst.Args, " "), err, src.Args[0], srcWait, dstOut.String(), srcErr.String())
	}
}

// container is one `podman run` of containerPayload.
type container struct {
	e      *podman
	name   string
	cmd    *exec.Cmd
	events *fifo
	dir    string // mounted at /w
	stderr *lines
	pids   map[string]int // "command" and "daemon", as the container sees them
	host   []procID       // every process of the container, as the host sees them
	ended  chan struct{}
}

// procID names a process across pid reuse: its pid and its start time.
type procID struct {
	pid   int
	start string
}

// runPayload runs containerPayload with `podman run FLAGS IMAGE sh -c ...`
// (IMAGE is a directory with --rootfs). It returns once COMMAND and the
// daemon have announced themselves.
func (e *podman) runPayload(t *testing.T, name string, flags []string, image string) *container {
	t.Helper()
	c := &container{e: e, name: "reaper-" + name, events: newFIFO(t, "events"), stderr: newLines(), ended: make(chan struct{})}
	c.dir = filepath.Dir(c.events.path)
	// No --rm: with it, `podman run` races the removal that `podman stop`
	// starts for the container's exit code, and now and then reports 0.
	args := []string{"run", "--name=" + c.name, "--network=none",
		"-v", c.dir + ":/w", "-e", "REAPER_REPORT=/w/report.json"}
	args = append(append(append(args, flags...), image), "sh", "-c", containerPayload)
	c.cmd = e.command(context.Background(), args...)
	stderr, err := c.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go c.stderr.readFrom(stderr)
	go func() { <-c.stderr.closed; c.cmd.Wait(); close(c.ended) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		e.run(ctx, "rm", "--force", "--time=0", c.name)
		select {
		case <-c.ended:
		default:
			c.cmd.Process.Kill()
			select {
			case <-c.ended:
			case <-time.After(deadline):
				t.Errorf("podman run %s did not end after SIGKILL", c.name)
			}
		}
	})
	c.pids = map[string]int{}
	lines := make(chan string, 16)
	go func() {
		for line, err := c.events.r.ReadString('\n'); err == nil; line, err = c.events.r.ReadString('\n') {
			lines <- strings.TrimSpace(line)
		}
	}()
	c.events.f.SetReadDeadline(time.Now().Add(deadline))
	for len(c.pids) < 2 {
		select {
		case line := <-lines:
			kind, pid, _ := strings.Cut(line, " ")
			c.pids[kind], _ = strconv.Atoi(pid)
		case <-c.ended:
			t.Fatalf("podman run %s exited before its payload ran:\n%s", c.name, c.stderr)
		case <-time.After(deadline):
			t.Fatalf("podman run %s: no payload after %v:\n%s", c.name, deadline, c.stderr)
		}
	}
	c.host = c.processes(t)
	return c
}

// processes lists the container's processes as the host sees them: those in
// the PID namespace of its PID 1.
func (c *container) processes(t *testing.T) []procID {
	t.Helper()
	out := c.e.mustRun(t, "inspect", "--format={{.State.Pid}}", c.name)
	pid1, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("podman inspect: %q", out)
	}
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid1))
	if err != nil {
		t.Fatal(err)
	}
	var procs []procID
	for _, pid := range allPIDs() {
		if link, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid)); link == ns {
			procs = append(procs, procID{pid, startTime(pid)})
		}
	}
	if len(procs) < 5 { // reaper, sh, the daemon and two sleeps
		t.Fatalf("found %d processes in the container, want 5 or more", len(procs))
	}
	return procs
}

// stop runs podman stop, with a timeout well above reaper's grace period.
func (c *container) stop(t *testing.T) {
	t.Helper()
	began := time.Now()
	c.e.mustRun(t, "stop", "--time=60", c.name)
	t.Logf("podman stop %s: %v", c.name, time.Since(began).Round(time.Millisecond))
}

// expect checks that `podman run` exited with code, that reaper's report
// shows every process of the payload gone after SIGTERM, the daemon too
// (which also noted its SIGTERM), and that none of the container's processes
// is left on the host.
func (c *container) expect(t *testing.T, code int) {
	t.Helper()
	select {
	case <-c.ended:
	case <-time.After(deadline):
		t.Fatalf("podman run did not exit after podman stop\n%s", c.stderr)
	}
	if got := c.cmd.ProcessState.ExitCode(); got != code {
		t.Errorf("podman run exited %d, want COMMAND's %d\n%s", got, code, c.stderr)
	}
	data, err := os.ReadFile(filepath.Join(c.dir, "report.json"))
	if err != nil {
		t.Fatalf("no report: %v\n%s", err, c.stderr)
	}
	var rep reaper.Report
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatalf("report %s: %v", data, err)
	}
	if rep.ExitCode != code {
		t.Errorf("reaper exited %d, want COMMAND's %d\n%s", rep.ExitCode, code, data)
	}
	got := outcomes(rep)
	if len(got) < 4 || got[c.pids["daemon"]] != "exited" || got[c.pids["command"]] != "exited" {
		t.Errorf("report: outcomes %v, want the daemon (%d), COMMAND (%d) and the sleeps exited after SIGTERM\n%s",
			got, c.pids["daemon"], c.pids["command"], data)
	}
	for pid, outcome := range got {
		if outcome != "exited" {
			t.Errorf("pid %d: %s, want exited", pid, outcome)
		}
	}
	if log, _ := os.ReadFile(filepath.Join(c.dir, "log")); string(log) != "daemon-term\n" {
		t.Errorf("the daemon noted %q, want its SIGTERM", log)
	}
	for _, p := range c.host {
		if startTime(p.pid) == p.start {
			t.Errorf("host pid %d of the container still runs", p.pid)
		}
	}
}

// dockerfileBase returns the image the Dockerfile's build stage starts
// from: "golang:1.26".
func dockerfileBase(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^FROM (?:--platform=\S+ )?(golang:\S+) AS build$`).FindSubmatch(data)
	if m == nil {
		t.Fatal("the Dockerfile has no 'FROM [--platform=...] golang:... AS build' line")
	}
	return string(m[1])
}

// staticELF checks that path is a static, stripped executable: no program
// interpreter, no dynamic section, no symbol table.
func staticELF(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, p := range f.Progs {
		switch p.Type {
		case elf.PT_INTERP:
			return errors.New("dynamically linked: it has a PT_INTERP program header")
		case elf.PT_DYNAMIC:
			return errors.New("it has a dynamic section")
		}
	}
	if f.Section(".symtab") != nil {
		return errors.New("not stripped: it has a .symtab")
	}
	return nil
}

// documentedBuild checks the build information of the reaper at path: cgo
// off, and the documented linker flags (async preemption off).
func documentedBuild(path string) error {
	info, err := buildinfo.ReadFile(path)
	if err != nil {
		return err
	}
	if cgo := settingOf(info, "CGO_ENABLED"); cgo != "0" {
		return fmt.Errorf("CGO_ENABLED=%q, want 0", cgo)
	}
	if ld := settingOf(info, "-ldflags"); !strings.Contains(ld, "asyncpreemptoff=1") || !strings.Contains(ld, "-s -w") {
		return fmt.Errorf("-ldflags %q, want the documented ones", ld)
	}
	return nil
}

// busyboxInto puts a static busybox and links for applets into dir, or skips
// the test when this machine's busybox is not static (busybox-static).
func busyboxInto(t testing.TB, dir string, applets ...string) string {
	t.Helper()
	path, err := exec.LookPath("busybox")
	if err != nil {
		skip(t, "no busybox (apt-get install busybox-static)")
	}
	if err := staticELF(path); err != nil && !strings.Contains(err.Error(), "symtab") {
		skip(t, "%s is not static (apt-get install busybox-static): %v", path, err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "busybox"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, a := range applets {
		if err := os.Symlink("busybox", filepath.Join(dir, a)); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "busybox")
}

// busyboxRoot makes a root file system of busybox alone, for --rootfs.
func busyboxRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	busyboxInto(t, filepath.Join(root, "bin"), "sh", "setsid", "sleep")
	return root
}

// busyboxBin makes a directory of busybox, to mount at /bin.
func busyboxBin(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "bin")
	busyboxInto(t, dir, "sh", "setsid", "sleep")
	return dir
}

// repoRoot is the repository's top directory.
func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// goEnv returns a go env variable.
func goEnv(t testing.TB, name string) string {
	t.Helper()
	out, err := exec.Command("go", "env", name).Output()
	if err != nil {
		t.Fatalf("go env %s: %v", name, err)
	}
	return strings.TrimSpace(string(out))
}

// ---- cgroups and /proc -----------------------------------------------------

// removeCgroupTree removes a cgroup and every group below it, deepest first,
// trying again while processes still leave them.
func removeCgroupTree(t testing.TB, dir string) {
	if _, err := os.Stat(dir); err != nil {
		return
	}
	end := time.Now().Add(deadline)
	for {
		err := cgroup.RemoveTree(dir)
		if err == nil {
			return
		}
		if time.Now().After(end) {
			t.Errorf("cannot remove cgroup %s: %v", dir, err)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// allPIDs lists the processes in /proc.
func allPIDs() []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// startTime returns field 22 of /proc/PID/stat, "" when pid is gone.
func startTime(pid int) string {
	if f := statFields(pid); len(f) > 19 {
		return f[19]
	}
	return ""
}

// ---- systemd ----------------------------------------------------------------

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
	ct.systemctl(t, "start", "--job-mode=ignore-dependencies", "example-web.service")
	ct.systemctl(t, "stop", "example-web.service")
	if journal := ct.journal(t, "example-web.service"); !strings.Contains(journal, "Deactivated successfully") ||
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

	ct.systemctl(t, "start", "reaper-warn.service")
	warning := regexp.MustCompile(`reaper: warning: the grace period is not below the unit's stop timeout.* unit=reaper-warn.service grace=30s timeout_stop=2.5s`)
	t.Logf("reaper-warn.service: %s", ct.waitJournal(t, "reaper-warn.service", warning))
	if journal := ct.journal(t, "reaper-payload.service"); strings.Contains(journal, "grace period") {
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
	text := string(mustRead(t, filepath.Join(repoRoot(t), "examples/reaper-example.service")))
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

// nspawn is a real systemd, booted by systemd-nspawn on this machine's /usr
// with a volatile root.
type nspawn struct {
	name    string
	dir     string // bound read-only at /opt/reaper-test
	cmd     *exec.Cmd
	ended   chan struct{}
	console string
	init    int // the container's PID 1, as the host sees it
	initAt  string
	pidNS   string
	groups  []string // the test's cgroups nspawn runs in, cgroup2's first
}

// bootSystemd boots a container with units installed in
// /etc/systemd/system, reaper and the payload in /opt/reaper-test, and
// waits until its systemd is up. It skips the test where systemd-nspawn
// cannot run.
func bootSystemd(t *testing.T, units map[string]string) *nspawn {
	t.Helper()
	return bootSystemdWith(t, bootSpec{units: units})
}

// bootSpec is what a container gets besides reaper and payload.sh in
// /opt/reaper-test.
type bootSpec struct {
	units map[string]string // name: text, in /etc/systemd/system
	opt   map[string][]byte // name: content, executable, in /opt/reaper-test
	// files are bound read-only at any other path of the container (path:
	// content); nspawn makes the directories they need.
	files map[string]string
	// dirs are host directories bound read-only at the same path.
	dirs []string
}

// nspawnSeq numbers the containers of this test process: tests that run
// in parallel each boot their own.
var nspawnSeq atomic.Int32

// bootSystemdWith is bootSystemd with more files in the container.
func bootSystemdWith(t testing.TB, spec bootSpec) *nspawn {
	t.Helper()
	requireRoot(t)
	for _, tool := range []string{"systemd-nspawn", "script", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			skip(t, "%s not installed (apt-get install systemd-container util-linux bsdutils): %v", tool, err)
		}
	}
	if _, err := os.Stat("/usr/lib/systemd/systemd"); err != nil {
		skip(t, "no systemd on this machine to boot: %v", err)
	}
	name := fmt.Sprintf("reaper-nspawn-%d-%d", os.Getpid(), nspawnSeq.Add(1))
	ct := &nspawn{name: name, dir: t.TempDir(), ended: make(chan struct{})}
	ct.console = filepath.Join(ct.dir, "console.log")
	args := []string{"systemd-nspawn", "-D", "/", "--volatile=yes", "-b", "--register=no", "--keep-unit",
		"--private-network", "-M", ct.name, "--bind-ro=" + ct.dir + ":/opt/reaper-test"}
	ct.install(t, "reaper", mustRead(t, bin().reaper), 0o755)
	ct.install(t, "payload.sh", []byte(servicePayload), 0o755)
	for name, data := range spec.opt {
		ct.install(t, name, data, 0o755)
	}
	for name, text := range spec.units {
		ct.install(t, name, []byte(text), 0o644)
		args = append(args, "--bind-ro="+filepath.Join(ct.dir, name)+":/etc/systemd/system/"+name)
	}
	for _, dir := range spec.dirs {
		args = append(args, "--bind-ro="+dir)
	}
	if len(spec.files) > 0 {
		dir := t.TempDir()
		i := 0
		for path, text := range spec.files {
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

// install writes a file into the directory bound at /opt/reaper-test.
func (ct *nspawn) install(t testing.TB, name string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(ct.dir, name), data, mode); err != nil {
		t.Fatal(err)
	}
}

func mustRead(t testing.TB, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// start runs systemd-nspawn under script (it needs a terminal) from cgroups
// of the test's own, bounded by pids.max.
func (ct *nspawn) start(t testing.TB, nspawnLine string) {
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
func (ct *nspawn) makeGroups(t testing.TB) {
	t.Helper()
	bounded := false
	for _, h := range cgroupHierarchies() {
		if !h.v2 && !h.systemd && !h.pids {
			continue
		}
		dir := filepath.Join(h.mount, ct.name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			ct.removeGroups(t)
			skip(t, "cannot make a cgroup for systemd-nspawn: %v", err)
		}
		if h.v2 {
			ct.groups = append([]string{dir}, ct.groups...)
		} else {
			ct.groups = append(ct.groups, dir)
		}
		if h.v2 || h.pids {
			bounded = bounded || os.WriteFile(dir+"/pids.max", []byte("2048"), 0) == nil
		}
	}
	if v2, _ := cgroupMounts(); !bounded || len(ct.groups) == 0 || v2 == "" || !strings.HasPrefix(ct.groups[0], v2) {
		ct.removeGroups(t)
		skip(t, "no cgroup2 group with a pids.max bound for systemd-nspawn")
	}
}

// removeGroups removes the test's cgroups and what nspawn made below them.
func (ct *nspawn) removeGroups(t testing.TB) {
	for _, dir := range ct.groups {
		removeCgroupTree(t, dir)
	}
	ct.groups = nil
}

// bootDeadline bounds the boot and each systemctl call: boots take seconds,
// and minutes on a loaded machine.
const bootDeadline = 3 * time.Minute

// waitBoot finds the container's systemd and waits until it is up.
func (ct *nspawn) waitBoot(t testing.TB) {
	t.Helper()
	end := time.Now().Add(bootDeadline)
	for ct.init == 0 {
		select {
		case <-ct.ended:
			skip(t, "systemd-nspawn cannot run here: it exited %v\n%s", ct.cmd.ProcessState, ct.consoleTail())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(end) {
			t.Fatalf("no systemd in the container after %v\n%s", bootDeadline, ct.consoleTail())
		}
		ct.init = containerInit(ct.cmd.Process.Pid)
	}
	ct.initAt = startTime(ct.init)
	ct.pidNS, _ = os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", ct.init))
	ctx, cancel := context.WithDeadline(context.Background(), end)
	defer cancel()
	for {
		// "offline" until the container's PID 1 is systemd and listens.
		out, _ := ct.command(ctx, "systemctl", "is-system-running", "--wait").Output()
		switch state := strings.TrimSpace(string(out)); state {
		case "running", "degraded":
			t.Logf("systemd up in the container (%s) in %v", state, time.Since(end.Add(-bootDeadline)).Round(time.Millisecond))
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
	return firstBelow(root, func(pid int) bool {
		ns, nested := innermostPID(pid)
		return nested && ns == 1
	})
}

// consoleTail is the end of the container's console, for failures.
func (ct *nspawn) consoleTail() string {
	data, _ := os.ReadFile(ct.console)
	if len(data) > 4000 {
		data = data[len(data)-4000:]
	}
	return string(data)
}

// command runs a program in the container's namespaces.
func (ct *nspawn) command(ctx context.Context, argv ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(ct.init), "-a", "--"}, argv...)...)
	cmd.WaitDelay = time.Second
	return cmd
}

// systemctl runs systemctl in the container and fails the test on an error.
func (ct *nspawn) systemctl(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bootDeadline)
	defer cancel()
	out, err := ct.command(ctx, append([]string{"systemctl"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("systemctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// show returns the values of a unit's properties, separated by spaces.
func (ct *nspawn) show(t *testing.T, unit string, props ...string) string {
	t.Helper()
	var values []string
	for _, p := range props {
		values = append(values, ct.systemctl(t, "show", "--property="+p, "--value", unit))
	}
	return strings.Join(values, " ")
}

// journal returns a unit's messages.
func (ct *nspawn) journal(t *testing.T, unit string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bootDeadline)
	defer cancel()
	out, _ := ct.command(ctx, "journalctl", "--no-pager", "-o", "cat", "-u", unit).CombinedOutput()
	return string(out)
}

// waitJournal waits until a line of the unit's journal matches, and
// returns the match.
func (ct *nspawn) waitJournal(t *testing.T, unit string, re *regexp.Regexp) string {
	t.Helper()
	end := time.Now().Add(deadline)
	for {
		journal := ct.journal(t, unit)
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
	for _, pid := range allPIDs() {
		if ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid)); ns != ct.pidNS {
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
	run := ct.systemctl(t, "show", "--property=InvocationID", "--value", unit)
	end := time.Now().Add(deadline)
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
	ct.systemctl(t, "start", unit)
	ct.waitUp(t, unit, marker)
	var left [][]string
	for i := 0; i < 5; i++ {
		ct.systemctl(t, "restart", unit)
		run := ct.systemctl(t, "show", "--property=InvocationID", "--value", unit)
		_, others := split(ct.payload(marker), run)
		left = append(left, others)
		ct.waitUp(t, unit, marker)
	}
	ct.systemctl(t, "stop", unit)
	_, others := split(ct.payload(marker), "")
	left = append(left, others)
	// An inactive unit without processes is unloaded at once, with its
	// exit status: the journal keeps the account of each stop.
	if state := ct.show(t, unit, "ActiveState"); state != "inactive" {
		t.Errorf("%s after stop: %s, want inactive", unit, state)
	}
	journal := ct.journal(t, unit)
	if n := strings.Count(journal, "Deactivated successfully"); n != 6 || strings.Contains(journal, "Failed with result") {
		t.Errorf("%s: %d stops deactivated successfully, want 6; journal:\n%s", unit, n, journal)
	}
	return left
}

// shutdown kills the container's PID 1 (the kernel then kills the rest of
// its PID namespace), waits for nspawn, and removes the cgroups.
func (ct *nspawn) shutdown(t testing.TB) {
	if ct.init != 0 && startTime(ct.init) == ct.initAt {
		syscall.Kill(ct.init, syscall.SIGKILL)
	}
	kill := func() { os.WriteFile(ct.groups[0]+"/cgroup.kill", []byte("1"), 0) }
	select {
	case <-ct.ended:
	case <-time.After(deadline):
		t.Errorf("systemd-nspawn did not exit after its container's PID 1 was killed")
		kill()
		<-ct.ended
	}
	kill() // anything nspawn left
	if err := waitEmpty(ct.groups[0]); err != nil {
		t.Errorf("cgroup %s: %v", ct.groups[0], err)
	}
	ct.removeGroups(t)
	os.Remove("/run/systemd/nspawn/propagate/" + ct.name)
}
