package engines

// Real deployments on podman: the image built from the Dockerfile by podman
// and stopped with `podman stop`, and reaper as podman's --init.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/reaper-init/reaper/integration/itest"
	"github.com/reaper-init/reaper/reaper"
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
		"-v", itest.GoEnv(t, "GOMODCACHE") + ":/go/pkg/mod", "-v", itest.GoEnv(t, "GOCACHE") + ":/root/.cache/go-build",
		"-t", image, "-f", "Dockerfile"}, itest.RepoRoot(t))...)
	t.Logf("podman build: %v", time.Since(began).Round(time.Millisecond))

	// The binary in the image: static, stripped, built as documented.
	e.mustRun(t, "create", "--name=reaper-extract", image)
	extracted := filepath.Join(e.dir, "reaper-from-image")
	e.mustRun(t, "cp", "reaper-extract:/reaper", extracted)
	e.mustRun(t, "rm", "reaper-extract")
	if err := itest.StaticELF(extracted); err != nil {
		t.Errorf("/reaper in the image: %v", err)
	}
	if err := itest.DocumentedBuild(extracted); err != nil {
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
	if err := os.Symlink(itest.Bin().Reaper, link); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := itest.RunBinary(t, link, nil, "--version")
	if code != 0 || !regexp.MustCompile(`^tini version 0\.19\.0 - reaper \S+\n$`).MatchString(stdout) || stderr != "" {
		t.Errorf("docker-init --version: exit %d, %q, %q", code, stdout, stderr)
	}

	// podman run --init: podman mounts the init at /run/podman-init and runs
	// `/run/podman-init -- COMMAND`. TINI_VERBOSITY=2 (info) is read in tini
	// mode only: reaper's info lines show it took tini's command line.
	e := newPodman(t)
	rootfs := busyboxRoot(t)
	c := e.runPayload(t, "init", []string{"--init", "--init-path=" + itest.Bin().Reaper, "-e", "TINI_VERBOSITY=2", "--rootfs"}, rootfs)
	c.stop(t)
	c.expect(t, 7)
	if !strings.Contains(c.stderr.String(), "reaper: info: started") {
		t.Errorf("no info line from reaper as podman-init (TINI_VERBOSITY=2):\n%s", c.stderr)
	}
}

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
	itest.RequireRoot(t)
	for _, tool := range []string{"podman", "runc"} {
		if _, err := exec.LookPath(tool); err != nil {
			itest.Skip(t, "%s not installed (apt-get install podman runc): %v", tool, err)
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
	t.Logf("%s imported from %s in %v", name, itest.GoEnv(t, "GOROOT"), time.Since(began).Round(time.Millisecond))
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
		itest.Skip(t, "the Dockerfile builds with %s; this machine's Go is %s", name, runtime.Version())
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
		"--transform=s,^\\.,usr/local/go,", "-C", itest.GoEnv(t, "GOROOT"), ".", "-C", root}
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
	events *itest.FIFO
	dir    string // mounted at /w
	stderr *itest.Lines
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
	c := &container{e: e, name: "reaper-" + name, events: itest.NewFIFO(t, "events"), stderr: itest.NewLines(), ended: make(chan struct{})}
	c.dir = filepath.Dir(c.events.Path)
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
	go c.stderr.Collect(stderr)
	go func() { <-c.stderr.Closed; c.cmd.Wait(); close(c.ended) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), itest.Deadline)
		defer cancel()
		e.run(ctx, "rm", "--force", "--time=0", c.name)
		select {
		case <-c.ended:
		default:
			c.cmd.Process.Kill()
			select {
			case <-c.ended:
			case <-time.After(itest.Deadline):
				t.Errorf("podman run %s did not end after SIGKILL", c.name)
			}
		}
	})
	c.pids = map[string]int{}
	lines := make(chan string, 16)
	go func() {
		for line, err := c.events.Reader.ReadString('\n'); err == nil; line, err = c.events.Reader.ReadString('\n') {
			lines <- strings.TrimSpace(line)
		}
	}()
	c.events.File.SetReadDeadline(time.Now().Add(itest.Deadline))
	for len(c.pids) < 2 {
		select {
		case line := <-lines:
			kind, pid, _ := strings.Cut(line, " ")
			c.pids[kind], _ = strconv.Atoi(pid)
		case <-c.ended:
			t.Fatalf("podman run %s exited before its payload ran:\n%s", c.name, c.stderr)
		case <-time.After(itest.Deadline):
			t.Fatalf("podman run %s: no payload after %v:\n%s", c.name, itest.Deadline, c.stderr)
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
	for _, pid := range itest.AllPIDs() {
		if link, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid)); link == ns {
			procs = append(procs, procID{pid, itest.StartTime(pid)})
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
	case <-time.After(itest.Deadline):
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
	got := itest.Outcomes(rep)
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
		if itest.StartTime(p.pid) == p.start {
			t.Errorf("host pid %d of the container still runs", p.pid)
		}
	}
}

// dockerfileBase returns the image the Dockerfile's build stage starts
// from: "golang:1.26".
func dockerfileBase(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(itest.RepoRoot(t), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^FROM (?:--platform=\S+ )?(golang:\S+) AS build$`).FindSubmatch(data)
	if m == nil {
		t.Fatal("the Dockerfile has no 'FROM [--platform=...] golang:... AS build' line")
	}
	return string(m[1])
}

// busyboxInto puts a static busybox and links for applets into dir, or skips
// the test when this machine's busybox is not static (busybox-static).
func busyboxInto(t testing.TB, dir string, applets ...string) string {
	t.Helper()
	path, err := exec.LookPath("busybox")
	if err != nil {
		itest.Skip(t, "no busybox (apt-get install busybox-static)")
	}
	if err := itest.StaticELF(path); err != nil && !strings.Contains(err.Error(), "symtab") {
		itest.Skip(t, "%s is not static (apt-get install busybox-static): %v", path, err)
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
