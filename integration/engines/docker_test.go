package engines

// Docker, for real: Debian's dockerd, isolated (its own directories,
// socket and namespaces, no network of its own), with reaper as its init
// (`--init-path`), and the image built from the project's Dockerfile by
// BuildKit with reaper as ENTRYPOINT; tini, Docker's own init, measured
// alongside. Everything goes through the Docker API, with Debian's client.

import (
	"context"
	"debug/buildinfo"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/reaper-init/reaper/integration/itest"
	"golang.org/x/sys/unix"
)

// dockerClient is Debian's client, of the same release as Debian's dockerd
// (another docker on PATH may be newer than the daemon's API).
const dockerClient = "/usr/bin/docker"

// quickStop bounds a `docker stop` whose processes all stop on SIGTERM:
// below reaper's grace period (5 s by default) and docker's own timeout
// (-t 10), so that waiting for either fails the test. It takes about 0.2 s
// on a quiet machine, and up to 2 s on this one when it is busy.
const quickStop = 4 * time.Second

// quickTeardown matches reaper's summary of a teardown in which every
// process exited after the stop signal, within a second.
var quickTeardown = regexp.MustCompile(`(?m)teardown: (\d+) descendants, (\d+) exited after SIGTERM, 0 killed, [0-9.]+(ms|µs|ns)$`)

// dockerd is a private Docker daemon: its data, state, socket, pid file,
// configuration and client configuration under one temporary directory,
// run in namespaces of its own (see engineNS) with no bridge, no iptables
// rules and no IP forwarding.
type dockerd struct {
	*itest.Daemon
	dir string
	ns  *engineNS
	env []string // the client's: DOCKER_HOST and the like
	net string   // the host's network settings before the daemon started
}

// newDockerd starts a private dockerd whose init (`docker run --init`) is
// initPath, or skips the test when dockerd cannot run here.
func newDockerd(t *testing.T, initPath string) *dockerd {
	t.Helper()
	itest.RequireRoot(t)
	for _, tool := range []string{"dockerd", dockerClient, "containerd", "containerd-shim-runc-v2", "runc"} {
		if _, err := exec.LookPath(tool); err != nil {
			itest.Skip(t, "%s not installed (apt-get install docker.io): %v", tool, err)
		}
	}
	d := &dockerd{dir: t.TempDir(), net: hostNetwork()}
	sock := filepath.Join(d.dir, "docker.sock")
	d.env = append(os.Environ(), "DOCKER_HOST=unix://"+sock, "DOCKER_CONFIG="+filepath.Join(d.dir, "client"), "DOCKER_BUILDKIT=1")
	// Its identity key in its own directory, not in /etc/docker.
	conf := fmt.Sprintf(`{"deprecated-key-path": %q}`, filepath.Join(d.dir, "key.json"))
	if err := os.WriteFile(filepath.Join(d.dir, "daemon.json"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	d.ns = newEngineNS(t, d.dir, "docker")
	t.Cleanup(func() { d.close(t) })
	cmd := d.ns.command(context.Background(), d.ns.group(t, "daemon"), "dockerd",
		"--data-root="+d.dir+"/data", "--exec-root="+d.dir+"/exec", "--host=unix://"+sock,
		"--pidfile="+d.dir+"/dockerd.pid", "--config-file="+d.dir+"/daemon.json",
		"--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-masq=false", "--ip-forward=false",
		"--init-path="+initPath)
	cmd.Env = os.Environ()
	d.Daemon = itest.StartDaemon(t, "dockerd", cmd)
	d.waitReady(t)
	return d
}

// waitReady waits until the daemon listens on its socket.
func (d *dockerd) waitReady(t *testing.T) {
	t.Helper()
	began := time.Now()
	timeout := time.After(itest.Deadline)
	for {
		seen, grew := d.Log.Snapshot()
		all := strings.Join(seen, "\n")
		if strings.Contains(all, "API listen on ") {
			t.Logf("dockerd up in %v", time.Since(began).Round(time.Millisecond))
			return
		}
		select {
		case <-grew:
		case <-d.Ended:
			itest.Skip(t, "dockerd cannot run here: it exited %v\n%s", d.Cmd.ProcessState, itest.Tail(all, 4000))
		case <-timeout:
			t.Fatalf("dockerd did not listen within %v:\n%s", itest.Deadline, itest.Tail(all, 4000))
		}
	}
}

// close removes every container and image, stops the daemon (containerd,
// which it started, stops with it), ends its namespaces, removes its
// cgroups, and checks that the host's network settings did not change.
func (d *dockerd) close(t *testing.T) {
	if d.Daemon != nil && !d.Exited() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		if ids, err := d.run(ctx, "ps", "--all", "--quiet"); err == nil && strings.TrimSpace(ids) != "" {
			d.run(ctx, append([]string{"rm", "--force"}, strings.Fields(ids)...)...)
		}
		if ids, err := d.run(ctx, "images", "--all", "--quiet"); err == nil && strings.TrimSpace(ids) != "" {
			d.run(ctx, append([]string{"rmi", "--force"}, strings.Fields(ids)...)...)
		}
		d.run(ctx, "builder", "prune", "--all", "--force")
		cancel()
		d.Stop(t)
	}
	if d.ns != nil {
		d.ns.close(t)
	}
	if net := hostNetwork(); net != d.net {
		t.Errorf("the host's network settings changed while dockerd ran: %s, then %s", d.net, net)
	}
}

// hostNetwork describes what dockerd, or containerd's CNI plugins, would
// change in the host's network if they were not kept from it: IP
// forwarding and their bridges.
func hostNetwork() string {
	forward, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	desc := "ip_forward=" + strings.TrimSpace(string(forward))
	for _, link := range []string{"docker0", "docker_gwbridge", "cni0"} {
		if _, err := os.Stat("/sys/class/net/" + link); err == nil {
			desc += " " + link
		}
	}
	return desc
}

// docker is a client command line for this daemon.
func (d *dockerd) docker(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, dockerClient, args...)
	cmd.Env = d.env
	cmd.WaitDelay = time.Second
	return cmd
}

// run runs a client command and returns its output.
func (d *dockerd) run(ctx context.Context, args ...string) (string, error) {
	return outputOf(d.docker(ctx, args...))
}

// mustRun runs a client command and fails the test on an error.
func (d *dockerd) mustRun(t *testing.T, args ...string) string {
	t.Helper()
	return mustSucceed(t, "docker", d.run, args...)
}

// importRoot imports the directory root as the image name.
func (d *dockerd) importRoot(t *testing.T, root, name string, changes ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	pipeInto(t, tarCommand(ctx, root), d.docker(ctx, importArgs(name, changes)...))
}

// tarCommand is a tar command that writes the directory root to its stdout.
func tarCommand(ctx context.Context, root string) *exec.Cmd {
	return exec.CommandContext(ctx, "tar", "-c", "-C", root, ".")
}

// inspect returns one field of a container, with a Go template.
func (d *dockerd) inspect(t *testing.T, name, field string) string {
	t.Helper()
	return strings.TrimSpace(d.mustRun(t, "inspect", "--format={{"+field+"}}", name))
}

// ---- the payloads ------------------------------------------------------------

// dockerStopPayload is COMMAND for `docker stop`: a shell that does not
// catch SIGTERM (it dies of it: 143) starts a worker in the background and
// a daemon in a session of its own; each notes the SIGTERM it gets in
// /w/log and exits. Each announces itself on /w/events.
const dockerStopPayload = `setsid sh -c 'trap "echo daemon-term >> /w/log; exit 0" TERM; echo "daemon $$" > /w/events; sleep 300 & wait' &
sh -c 'trap "echo worker-term >> /w/log; exit 0" TERM; echo "worker $$" > /w/events; sleep 300 & wait' &
echo "command $$" > /w/events
wait`

// dockerHUPPayload is COMMAND for `docker kill -s HUP`: it catches SIGHUP,
// as a server that reloads on it does, says so on /w/events, and goes on.
const dockerHUPPayload = `trap 'echo hup > /w/events' HUP
echo "command $$" > /w/events
while :; do sleep 1; done`

// ---- what runs as PID 1 --------------------------------------------------------

// dockerPID1 is one way to run COMMAND under an init that is PID 1 of a
// Docker container.
type dockerPID1 struct {
	name  string
	flags []string // docker run's, before the image
	image string
	// prefix comes between the image and COMMAND: the entrypoint's "--"
	// when the test mounts the init itself.
	prefix []string
	// is tells whether the host's pid is this init.
	is     func(pid int) error
	reaper bool // false for the baseline, which is measured, not judged
	// cmd: the image's CMD is dockerStopPayload, and the stop check runs it.
	cmd bool
}

// sameFile checks that the executable of pid is the file path.
func sameFile(path string) func(pid int) error {
	return func(pid int) error {
		exe, err := os.Stat(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil {
			return err
		}
		want, err := os.Stat(path)
		if err != nil {
			return err
		}
		if !os.SameFile(exe, want) {
			return fmt.Errorf("pid %d does not run %s", pid, path)
		}
		return nil
	}
}

// cmdlinePrefix checks that the command line of pid starts with argv.
func cmdlinePrefix(argv ...string) func(pid int) error {
	return func(pid int) error {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			return err
		}
		if want := strings.Join(argv, "\x00") + "\x00"; !strings.HasPrefix(string(data), want) {
			return fmt.Errorf("pid %d runs %q, want %q first", pid, data, argv)
		}
		return nil
	}
}

func TestDocker(t *testing.T) {
	// With TestKubePods, after the other tests: most of the time of both is
	// spent waiting (image imports and builds, grace periods).
	t.Parallel()
	initLink := filepath.Join(t.TempDir(), "docker-init")
	if err := os.Symlink(itest.Bin().Reaper, initLink); err != nil {
		t.Fatal(err)
	}
	d := newDockerd(t, initLink)
	if info := strings.TrimSpace(d.mustRun(t, "info", "--format={{.InitBinary}}")); info != initLink {
		t.Errorf("docker info: init %q, want %s", info, initLink)
	}
	busybox := "localhost/reaper-test-busybox:latest"
	d.importRoot(t, busyboxRoot(t), busybox)

	t.Run("init", func(t *testing.T) {
		t.Parallel()
		// dockerd mounts its init at /sbin/docker-init and runs
		// `/sbin/docker-init -- COMMAND`.
		checkDockerPID1(t, d, dockerPID1{name: "init", flags: []string{"--init"}, image: busybox,
			is: sameFile(itest.Bin().Reaper), reaper: true})
	})
	t.Run("tini", func(t *testing.T) {
		t.Parallel()
		// Docker's own init, run as dockerd runs its --init: mounted at
		// /sbin/docker-init, `/sbin/docker-init -- COMMAND`.
		tini, err := filepath.EvalSymlinks("/usr/bin/docker-init")
		if err != nil {
			itest.Skip(t, "no tini as Docker's init (apt-get install docker.io tini): %v", err)
		}
		checkDockerPID1(t, d, dockerPID1{name: "tini", image: busybox, prefix: []string{"--"},
			flags: []string{"--volume=" + tini + ":/sbin/docker-init:ro", "--entrypoint=/sbin/docker-init"},
			is:    sameFile(tini)})
	})
	t.Run("entrypoint", func(t *testing.T) {
		t.Parallel()
		image := buildDockerImages(t, d, busybox)
		checkDockerPID1(t, d, dockerPID1{name: "entrypoint", image: image,
			is: cmdlinePrefix("/reaper", "--"), reaper: true, cmd: true})
		t.Run("platforms", func(t *testing.T) { checkImagePlatforms(t, d) })
	})
}

// checkDockerPID1 runs the three checks of one init.
func checkDockerPID1(t *testing.T, d *dockerd, m dockerPID1) {
	t.Run("exit code", func(t *testing.T) { dockerExitCode(t, d, m) })
	t.Run("kill HUP", func(t *testing.T) { dockerKillHUP(t, d, m) })
	t.Run("stop", func(t *testing.T) { dockerStop(t, d, m) })
}

// dockerExitCode: `docker run` exits with COMMAND's status.
func dockerExitCode(t *testing.T, d *dockerd, m dockerPID1) {
	name := "reaper-" + m.name + "-exit"
	ctx, cancel := context.WithTimeout(context.Background(), itest.Deadline)
	defer cancel()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), itest.Deadline)
		defer cancel()
		d.run(ctx, "rm", "--force", name)
	})
	args := append(append(append([]string{"run", "--name=" + name, "--network=none"}, m.flags...), m.image), m.prefix...)
	out, err := d.run(ctx, append(args, "sh", "-c", "exit 7")...)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 7 {
		t.Errorf("docker run ... sh -c 'exit 7': %v, want exit status 7\n%s", err, out)
	}
	if code := d.inspect(t, name, ".State.ExitCode"); code != "7" {
		t.Errorf("the container's exit code: %s, want 7", code)
	}
}

// dockerKillHUP: SIGHUP is a reload, not a stop request (DESIGN.md, rule
// 2). COMMAND catches it and goes on; the container must still run when a
// grace period (REAPER_GRACE=1s) has passed, and then some.
func dockerKillHUP(t *testing.T, d *dockerd, m dockerPID1) {
	c := startDockerContainer(t, d, m, "hup", []string{"REAPER_GRACE=1s", "REAPER_VERBOSE=1"},
		[]string{"sh", "-c", dockerHUPPayload}, "command")
	fds := itest.Pidfds(t, []int{c.pid1, c.host["command"]})
	d.mustRun(t, "kill", "--signal=HUP", c.name)
	if line := c.events.Next(t); line != "hup" {
		t.Fatalf("COMMAND said %q, want hup", line)
	}
	const within = 2 * time.Second
	began := time.Now()
	ended := anyExits(fds, within)
	verdict := "still runs"
	if ended {
		d.mustRun(t, "wait", c.name)
		verdict = fmt.Sprintf("stopped %v after SIGHUP, exit code %s", time.Since(began).Round(10*time.Millisecond),
			d.inspect(t, c.name, ".State.ExitCode"))
	}
	t.Logf("measured: %s: docker kill -s HUP: COMMAND caught it; %v later the container %s", m.name, within, verdict)
	if ended && m.reaper {
		t.Errorf("docker kill -s HUP stopped the container (%s): SIGHUP must reach COMMAND and nothing more\n%s",
			verdict, d.logs(t, c.name))
	}
}

// dockerStop: `docker stop -t 10` ends the container at once with
// COMMAND's status (143: its shell dies of SIGTERM), the worker and the
// setsid daemon stopped by SIGTERM too, nothing left on the host.
func dockerStop(t *testing.T, d *dockerd, m dockerPID1) {
	command := []string{"sh", "-c", dockerStopPayload}
	if m.cmd {
		command = nil
	}
	c := startDockerContainer(t, d, m, "stop", []string{"REAPER_VERBOSE=1"}, command, "command", "worker", "daemon")
	began := time.Now()
	d.mustRun(t, "stop", "--time=10", c.name)
	took := time.Since(began)
	code := d.inspect(t, c.name, ".State.ExitCode")
	log, _ := os.ReadFile(filepath.Join(c.dir, "log"))
	terms := strings.Fields(string(log))
	var left []int
	for _, p := range c.procs {
		if itest.StartTime(p.pid) == p.start {
			left = append(left, p.pid)
		}
	}
	t.Logf("measured: %s: docker stop --time=10: %v, exit code %s, SIGTERM noted by %q, processes left %v",
		m.name, took.Round(time.Millisecond), code, terms, left)
	if code != "143" {
		t.Errorf("exit code %s, want 143 (COMMAND's: a shell killed by SIGTERM)\n%s", code, d.logs(t, c.name))
	}
	if len(left) > 0 {
		t.Errorf("host pids %v of the container still run after docker stop", left)
	}
	if !m.reaper {
		if len(terms) != 0 {
			t.Errorf("%s gave the other processes a SIGTERM (%q): the baseline has changed, and so must docs/deployment.md", m.name, terms)
		}
		return
	}
	if took > quickStop {
		t.Errorf("docker stop took %v, want under %v: something waited for a grace period\n%s", took, quickStop, d.logs(t, c.name))
	}
	logs := d.logs(t, c.name)
	if strings.Join(terms, " ") != "daemon-term worker-term" && strings.Join(terms, " ") != "worker-term daemon-term" {
		t.Errorf("SIGTERM noted by %q, want the worker and the daemon\n%s", terms, logs)
	}
	if m := quickTeardown.FindStringSubmatch(logs); m == nil || m[1] != m[2] {
		t.Errorf("reaper's summary: want every descendant exited after SIGTERM within a second\n%s", logs)
	}
}

// logs is a container's output, for failures.
func (d *dockerd) logs(t *testing.T, name string) string {
	ctx, cancel := context.WithTimeout(context.Background(), itest.Deadline)
	defer cancel()
	out, _ := d.run(ctx, "logs", name)
	return out
}

// anyExits waits until one of the pidfds is readable (its process gone),
// or timeout passes; it reports whether one is.
func anyExits(fds []int, timeout time.Duration) bool {
	end := time.Now().Add(timeout)
	polls := make([]unix.PollFd, len(fds))
	for i, fd := range fds {
		polls[i] = unix.PollFd{Fd: int32(fd), Events: unix.POLLIN}
	}
	for {
		left := time.Until(end)
		if left <= 0 {
			return false
		}
		n, err := unix.Poll(polls, int(left.Milliseconds())+1)
		if n > 0 {
			return true
		}
		if err != nil && !errors.Is(err, unix.EINTR) {
			return false
		}
	}
}

// dockerContainer is one `docker run --detach` of a payload.
type dockerContainer struct {
	name   string
	dir    string // mounted at /w
	events *itest.FIFO
	pid1   int            // the init, as the host sees it
	host   map[string]int // the announced processes, as the host sees them
	procs  []procID       // every process of the container, as the host sees them
}

// startDockerContainer runs command (the image's CMD when nil) under m,
// with env, and returns once the processes named announce have announced
// themselves on /w/events and the init is known to be m's, PID 1 of the
// container.
func startDockerContainer(t *testing.T, d *dockerd, m dockerPID1, what string, env, command []string, announce ...string) *dockerContainer {
	t.Helper()
	c := &dockerContainer{name: "reaper-" + m.name + "-" + what, events: itest.NewFIFO(t, "events"), host: map[string]int{}}
	c.dir = filepath.Dir(c.events.Path)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), itest.Deadline)
		defer cancel()
		d.run(ctx, "rm", "--force", c.name)
	})
	args := []string{"run", "--detach", "--name=" + c.name, "--network=none", "--volume=" + c.dir + ":/w"}
	for _, e := range env {
		args = append(args, "--env="+e)
	}
	args = append(append(append(args, m.flags...), m.image), m.prefix...)
	d.mustRun(t, append(args, command...)...)
	ns := map[string]int{}
	for len(ns) < len(announce) {
		kind, pid, _ := strings.Cut(c.events.Next(t), " ")
		ns[kind], _ = strconv.Atoi(pid)
	}
	var err error
	if c.pid1, err = strconv.Atoi(d.inspect(t, c.name, ".State.Pid")); err != nil || c.pid1 == 0 {
		t.Fatalf("docker inspect: no pid (%v)", err)
	}
	if err := m.is(c.pid1); err != nil {
		t.Fatalf("PID 1 of the container is not %s's init: %v", m.name, err)
	}
	if inner, _ := itest.InnermostPID(c.pid1); inner != 1 {
		t.Fatalf("the init (host pid %d) is pid %d in the container, want 1", c.pid1, inner)
	}
	for _, kind := range announce {
		if c.host[kind] = hostPID(c.pid1, ns[kind]); c.host[kind] == 0 {
			t.Fatalf("no descendant of the init (host pid %d) is %s's pid %d", c.pid1, kind, ns[kind])
		}
	}
	c.procs = namespaceProcs(c.pid1)
	return c
}

// hostPID finds, among root and its descendants, the process whose pid in
// its own namespace is inner, and returns its pid on the host (0: none).
func hostPID(root, inner int) int {
	return itest.FirstBelow(root, func(pid int) bool {
		ns, _ := itest.InnermostPID(pid)
		return ns == inner
	})
}

// namespaceProcs lists the processes in pid's PID namespace.
func namespaceProcs(pid int) []procID {
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
	if err != nil {
		return nil
	}
	var procs []procID
	for _, p := range itest.AllPIDs() {
		if link, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", p)); link == ns {
			procs = append(procs, procID{p, itest.StartTime(p)})
		}
	}
	return procs
}

// ---- the image -----------------------------------------------------------------

// buildDockerImages builds the project's Dockerfile as docs/deployment.md
// says (`docker build -t reaper .`, BuildKit, no network: the builder
// stage's base image is made from this machine's Go with its caches), then
// the image of the docs' `COPY --from=reaper` example on busybox, whose
// server is dockerStopPayload. It returns the example's image.
func buildDockerImages(t *testing.T, d *dockerd, busybox string) string {
	t.Helper()
	golang := dockerfileBase(t)
	root := golangRoot(t, golang)
	changes := append(golangChanges, seedGoCaches(t, root)...)
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	pipeInto(t, golangTar(ctx, t, root), d.docker(ctx, importArgs(golang, changes)...))
	t.Logf("%s imported in %v", golang, time.Since(began).Round(time.Millisecond))

	began = time.Now()
	d.mustRun(t, "build", "--network=none", "--tag=reaper", itest.RepoRoot(t))
	t.Logf("docker build -t reaper .: %v", time.Since(began).Round(time.Millisecond))

	dir := t.TempDir()
	dockerfile := strings.Replace(docsDockerfile(t), "FROM debian:bookworm-slim", "FROM "+busybox, 1)
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "server"), []byte("#!/bin/sh\n"+dockerStopPayload+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	began = time.Now()
	d.mustRun(t, "build", "--network=none", "--tag=reaper-example", dir)
	t.Logf("docker build of the COPY --from example: %v", time.Since(began).Round(time.Millisecond))
	return "reaper-example"
}

// docsDockerfile is the `COPY --from=reaper` example of docs/deployment.md,
// which must start from debian:bookworm-slim.
func docsDockerfile(t *testing.T) string {
	t.Helper()
	text := string(itest.MustRead(t, filepath.Join(itest.RepoRoot(t), "docs/deployment.md")))
	for _, block := range regexp.MustCompile("(?s)```dockerfile\n(.*?)```").FindAllStringSubmatch(text, -1) {
		if strings.Contains(block[1], "COPY --from=reaper /reaper /reaper") && strings.Contains(block[1], "FROM debian:bookworm-slim\n") {
			return block[1]
		}
	}
	t.Fatal("docs/deployment.md: no dockerfile block with FROM debian:bookworm-slim and COPY --from=reaper /reaper /reaper")
	return ""
}

// seedGoCaches puts into root, a golang image's root file system, what the
// Dockerfile's build needs of this machine's Go caches, and returns the
// image's configuration that goes with them: a `docker build` mounts no
// volumes, as podman's does, and has no network here. The modules of
// go.sum, from this machine's module cache, go to a module cache at the
// same path as this machine's (GOMODCACHE in the image), so that the build
// cache entries of their packages, which depend on where their sources
// are, are the same in the image. In /root/.cache/go-build, the entries of
// this machine's build cache that building reaper as the Dockerfile does
// reads: the build compiles reaper's own packages alone (the standard
// library takes half a minute here).
func seedGoCaches(t *testing.T, root string) []string {
	t.Helper()
	began := time.Now()
	modcache := itest.GoEnv(t, "GOMODCACHE")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	download := exec.CommandContext(ctx, "go", "mod", "download")
	download.Dir = itest.RepoRoot(t)
	download.Env = append(os.Environ(), "GOMODCACHE="+filepath.Join(root, modcache), "GOFLAGS=-modcacherw",
		"GOPROXY=file://"+filepath.Join(modcache, "cache/download"), "GOSUMDB=off")
	if out, err := download.CombinedOutput(); err != nil {
		t.Fatalf("go mod download from this machine's module cache: %v\n%s", err, out)
	}
	n := seedBuildCache(t, filepath.Join(root, "root/.cache/go-build"))
	t.Logf("Go caches seeded (%d build cache entries) in %v", n, time.Since(began).Round(time.Millisecond))
	return []string{"ENV GOMODCACHE=" + modcache}
}

// imagePlatforms are the platforms the image is built for besides this
// machine's own, and what the Dockerfile's build stage gives Go for each.
var imagePlatforms = []struct{ platform, goarch, goarm string }{
	{"linux/arm64", "arm64", ""},
	{"linux/arm/v7", "arm", "7"},
}

// checkImagePlatforms builds the Dockerfile for other platforms, as
// docs/architectures.md says, with BuildKit: the build stage runs here and
// cross-compiles, nothing is emulated. The image's /reaper must be a
// static executable of the platform, built as documented.
func checkImagePlatforms(t *testing.T, d *dockerd) {
	for _, p := range imagePlatforms {
		tag := "reaper-" + strings.ReplaceAll(p.platform, "/", "-")
		began := time.Now()
		d.mustRun(t, "build", "--network=none", "--platform="+p.platform, "--build-arg=COMMIT="+itest.GitHead(t), "--tag="+tag, itest.RepoRoot(t))
		t.Logf("docker build --platform=%s: %v", p.platform, time.Since(began).Round(time.Millisecond))
		name := tag + "-extract"
		d.mustRun(t, "create", "--name="+name, tag)
		extracted := filepath.Join(t.TempDir(), "reaper")
		d.mustRun(t, "cp", name+":/reaper", extracted)
		d.mustRun(t, "rm", name)
		d.mustRun(t, "rmi", tag)
		for _, r := range itest.ReleaseTargets {
			if r.GOARCH == p.goarch && r.GOARM == p.goarm {
				if err := itest.ELFOf(extracted, r); err != nil {
					t.Errorf("/reaper in the %s image: %v", p.platform, err)
				}
			}
		}
		if err := itest.StaticELF(extracted); err != nil {
			t.Errorf("/reaper in the %s image: %v", p.platform, err)
		}
		if err := itest.DocumentedBuild(extracted); err != nil {
			t.Errorf("/reaper in the %s image: %v", p.platform, err)
		}
		info, err := buildinfo.ReadFile(extracted)
		if err != nil {
			t.Fatal(err)
		}
		if got := itest.SettingOf(info, "GOARCH") + "/" + itest.SettingOf(info, "GOARM"); got != p.goarch+"/"+p.goarm {
			t.Errorf("/reaper in the %s image: GOARCH/GOARM %s, want %s/%s", p.platform, got, p.goarch, p.goarm)
		}
		if ld := itest.SettingOf(info, "-ldflags"); !strings.Contains(ld, "-X=main.commit="+itest.GitHead(t)) {
			t.Errorf("/reaper in the %s image: -ldflags %q, no commit", p.platform, ld)
		}
	}
}

// seedBuildCache copies into dst the files of this machine's build cache
// that the Dockerfile's builds of reaper open, this machine's platform's
// and imagePlatforms', watched with inotify, and returns how many.
func seedBuildCache(t *testing.T, dst string) int {
	t.Helper()
	cache := itest.GoEnv(t, "GOCACHE")
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		t.Fatalf("inotify: %v", err)
	}
	defer unix.Close(fd)
	dirs := map[int32]string{}
	for i := 0; i < 256; i++ {
		dir := filepath.Join(cache, fmt.Sprintf("%02x", i))
		if w, err := unix.InotifyAddWatch(fd, dir, unix.IN_OPEN); err == nil {
			dirs[int32(w)] = dir
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	builds := [][]string{nil}
	for _, p := range imagePlatforms {
		builds = append(builds, []string{"GOARCH=" + p.goarch, "GOARM=" + p.goarm})
	}
	for _, env := range builds {
		build := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(t.TempDir(), "reaper"), itest.PreemptOff, "./cmd/reaper")
		build.Dir = itest.RepoRoot(t)
		build.Env = append(append(os.Environ(), "CGO_ENABLED=0", "GOMIPS=softfloat"), env...)
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("go build %v: %v\n%s", env, err, out)
		}
	}
	opened := map[string]bool{}
	buf := make([]byte, 64*1024)
	for {
		n, err := unix.Read(fd, buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || n <= 0 {
			break
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			wd := int32(binary.NativeEndian.Uint32(buf[off:]))
			mask := binary.NativeEndian.Uint32(buf[off+4:])
			size := int(binary.NativeEndian.Uint32(buf[off+12:]))
			name := strings.TrimRight(string(buf[off+unix.SizeofInotifyEvent:off+unix.SizeofInotifyEvent+size]), "\x00")
			off += unix.SizeofInotifyEvent + size
			if mask&unix.IN_Q_OVERFLOW != 0 {
				t.Log("the build cache's inotify queue overflowed: the build compiles the standard library")
				return 0
			}
			if dir, ok := dirs[wd]; ok && name != "" && mask&unix.IN_ISDIR == 0 {
				opened[filepath.Join(dir, name)] = true
			}
		}
	}
	for path := range opened {
		target := filepath.Join(dst, filepath.Base(filepath.Dir(path)), filepath.Base(path))
		if err := copyFile(path, target); err != nil {
			t.Fatalf("seeding the build cache: %v", err)
		}
	}
	return len(opened)
}

// copyFile copies the regular file src to dst, making dst's directory.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
