package engines

// Where the container engines of the tests (podman, dockerd) run: a mount
// namespace and a cgroup namespace of their own, so that whatever they
// make (cgroups, mounts, files in /var/lib and /opt) stays below
// directories the test made and goes with them.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/reaper-init/reaper/integration/itest"
)

// engineNS is a mount and cgroup namespace for one container engine.
//
// Its cgroup namespace is rooted at a group the test makes, named root,
// in every hierarchy but the v1 memory one, bounded by pids.max, and the
// namespace's /sys/fs/cgroup shows those groups as the roots of their
// hierarchies: whatever cgroup the engine, its runtime and its containers
// make, with whatever parent ("/docker", "/libpod_parent",
// --cgroup-parent), lands below root. The memory hierarchy, which the
// tests never write to, is not there (see mountScript).
//
// /var/lib and /opt are directories of the test in the namespace, /run and
// /dev/shm tmpfs of their own: podman keeps its blob cache in
// /var/lib/containers and its locks in /dev/shm/libpod_lock (which a
// podman with a fresh run root frees all of, other podmans' included),
// runc its state in /run/runc, containerd makes /opt/containerd and its
// shims' sockets in /run/containerd, and dockerd /run/docker, whatever
// their roots say. engineOptions add to them.
//
// The namespaces live as long as their holder, a `cat` whose stdin the
// test holds, and the processes the engine starts in them.
type engineNS struct {
	dir    string   // the engine's directory: /var/lib, /opt and a staging area for mounts below it
	root   string   // the groups' path from each hierarchy's root
	groups []string // root in each hierarchy, cgroup2's first
	opts   engineOptions
	holder *exec.Cmd
	hold   io.WriteCloser
}

// engineOptions are what an engine needs beyond the namespaces every
// engine gets.
type engineOptions struct {
	// net: a network namespace of its own too, with its loopback up, in
	// which whatever the engine does to the network (bridges, routes,
	// forwarding) stays.
	net bool
	// private: more directories that get a directory of the test in the
	// namespace, as /var/lib does (the kubelet writes /var/log/containers
	// whatever its configuration says).
	private []string
	// pidsMax bounds the processes and threads of the engine and its
	// containers; 512 when 0.
	pidsMax int
}

var engineSeq atomic.Int64

// newEngineNS makes the groups and starts the holder of the namespaces, or
// skips the test where they cannot be made. kind names the engine in the
// groups' name. close ends them.
func newEngineNS(t testing.TB, dir, kind string) *engineNS {
	t.Helper()
	return newEngineNSWith(t, dir, kind, engineOptions{})
}

// newEngineNSWith is newEngineNS with options.
func newEngineNSWith(t testing.TB, dir, kind string, opts engineOptions) *engineNS {
	t.Helper()
	itest.RequireRoot(t)
	tools := []string{"unshare", "nsenter", "mount", "umount"}
	if opts.net {
		tools = append(tools, "ip")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			itest.Skip(t, "%s not installed (apt-get install util-linux mount iproute2): %v", tool, err)
		}
	}
	if opts.pidsMax == 0 {
		opts.pidsMax = 512
	}
	n := &engineNS{dir: dir, root: fmt.Sprintf("/reaper-%s-%d-%d", kind, os.Getpid(), engineSeq.Add(1)), opts: opts}
	for _, d := range append([]string{"varlib", "opt", "stage"}, n.privateDirs()...) {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	n.makeGroups(t)
	n.startHolder(t)
	return n
}

// privateDirs names the directories of the test that take the place of
// opts.private in the namespace, in the same order.
func (n *engineNS) privateDirs() []string {
	var dirs []string
	for _, p := range n.opts.private {
		dirs = append(dirs, "private"+strings.ReplaceAll(p, "/", "-"))
	}
	return dirs
}

// makeGroups makes root in every hierarchy but the v1 memory one, with a
// pids.max bound where the pids controller is.
func (n *engineNS) makeGroups(t testing.TB) {
	t.Helper()
	bounded := false
	for _, h := range itest.CgroupHierarchies() {
		if h.Memory {
			continue
		}
		dir := h.Mount + n.root
		if err := os.Mkdir(dir, 0o755); err != nil {
			n.removeGroups(t)
			itest.Skip(t, "cannot make a cgroup for a container engine: %v", err)
		}
		if h.V2 {
			n.groups = append([]string{dir}, n.groups...)
		} else {
			n.groups = append(n.groups, dir)
		}
		if h.V2 || h.Pids {
			bounded = bounded || os.WriteFile(dir+"/pids.max", []byte(strconv.Itoa(n.opts.pidsMax)), 0) == nil
		}
		inheritCpuset(dir)
	}
	if v2, _ := itest.CgroupMounts(); !bounded || v2 == "" || len(n.groups) == 0 || !strings.HasPrefix(n.groups[0], v2) {
		n.removeGroups(t)
		itest.Skip(t, "no cgroup2 group with a pids.max bound for a container engine")
	}
	// In the namespace, in place of the v1 memory hierarchy: see mountScript.
	if err := os.Mkdir(n.groups[0]+"/v1-memory", 0o755); err != nil {
		n.removeGroups(t)
		t.Fatalf("cgroup for a container engine: %v", err)
	}
}

// inheritCpuset gives a new v1 cpuset group its parent's CPUs and memory
// nodes (a v1 cpuset group starts with none, and refuses processes), and
// does nothing in other hierarchies.
func inheritCpuset(dir string) {
	for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
		if data, err := os.ReadFile(filepath.Join(filepath.Dir(dir), f)); err == nil {
			os.WriteFile(filepath.Join(dir, f), data, 0)
		}
	}
}

// group makes the group name below root in every hierarchy, for processes
// of the engine, and returns its directories.
func (n *engineNS) group(t testing.TB, name string) []string {
	t.Helper()
	var dirs []string
	for _, g := range n.groups {
		dir := filepath.Join(g, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatalf("cgroup for the engine: %v", err)
		}
		inheritCpuset(dir)
		dirs = append(dirs, dir)
	}
	return dirs
}

// holderScript sets up the namespaces from within (see mountScript), says
// "ready", and keeps them while its stdin is open.
const holderScript = `set -e
eval "$MOUNTS"
echo ready
exec cat`

// startHolder starts the holder from root, so that root is the root of its
// cgroup namespace in every hierarchy.
func (n *engineNS) startHolder(t testing.TB) {
	t.Helper()
	mounts, err := n.mountScript()
	if err != nil {
		n.removeGroups(t)
		itest.Skip(t, "container engine namespace: %v", err)
	}
	args := append(append([]string{"-c", joinGroups, "sh"}, n.groups...), "--", "unshare", "--mount", "--cgroup")
	if n.opts.net {
		args = append(args, "--net")
	}
	args = append(args, "--propagation=private", "--", "sh", "-c", holderScript)
	n.holder = exec.Command("sh", args...)
	n.holder.Env = append(os.Environ(), "MOUNTS="+mounts)
	n.holder.Stderr = os.Stderr
	out, err := n.holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if n.hold, err = n.holder.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := n.holder.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan string, 1)
	go func() { line, _ := bufio.NewReader(out).ReadString('\n'); ready <- line }()
	select {
	case line := <-ready:
		if line != "ready\n" {
			n.holder.Wait()
			n.removeGroups(t)
			itest.Skip(t, "cannot set up the mount and cgroup namespaces of a container engine: %q", line)
		}
	case <-time.After(itest.Deadline):
		n.holder.Process.Kill()
		n.holder.Wait()
		n.removeGroups(t)
		t.Fatal("the namespace holder of a container engine did not start")
	}
}

// joinGroups is a shell script that joins the groups given as its
// arguments up to "--", then executes the rest.
const joinGroups = `while [ "$1" != -- ]; do echo $$ > "$1/cgroup.procs" || exit 1; shift; done
shift
exec "$@"`

// mountScript is the shell code that makes the namespace's /sys/fs/cgroup
// show root as the root of each hierarchy, binds the engine's own /var/lib,
// /opt and opts.private, mounts a tmpfs on /run and /dev/shm, and brings up
// the loopback of a network namespace of its own.
//
// On this project's hybrid layout (v1 hierarchies and cgroup2 in
// directories of one tmpfs), the groups are bound aside, every hierarchy
// is unmounted, and a fresh tmpfs, read-only once set up, takes the old
// one's place with only the groups in it. runc and dockerd find no memory
// controller and make no group for it. podman makes its groups in every
// controller /proc/self/cgroup names, whatever is mounted, and moves
// conmon into them: it finds a group of cgroup2 (root/v1-memory) in the
// memory hierarchy's place, where it makes plain groups, moves nothing
// (with a warning) and removes the groups again. Where there is no v1
// memory hierarchy, each group is bound over its hierarchy.
func (n *engineNS) mountScript() (string, error) {
	var lines []string
	add := func(format string, args ...string) {
		quoted := make([]any, len(args))
		for i, a := range args {
			quoted[i] = shellQuote(a)
		}
		lines = append(lines, fmt.Sprintf(format, quoted...))
	}
	hs := itest.CgroupHierarchies()
	parent := ""
	for _, h := range hs {
		if h.Memory {
			parent = filepath.Dir(h.Mount)
		}
	}
	for i, h := range hs {
		switch {
		case h.Memory:
		case parent == "":
			add("mount --bind %s %s", h.Mount+n.root, h.Mount)
		case filepath.Dir(h.Mount) != parent:
			return "", fmt.Errorf("cgroup hierarchies in more than one directory (%s, %s)", parent, h.Mount)
		default:
			stage := filepath.Join(n.dir, "stage", strconv.Itoa(i))
			add("mkdir %s && mount --bind %s %s", stage, h.Mount+n.root, stage)
		}
	}
	if parent != "" {
		for _, h := range hs {
			add("umount %s", h.Mount)
		}
		add("mount -t tmpfs -o mode=0755 reaper-test-cgroups %s", parent)
		for i, h := range hs {
			if !h.Memory {
				stage := filepath.Join(n.dir, "stage", strconv.Itoa(i))
				add("mkdir %s && mount --move %s %s", h.Mount, stage, h.Mount)
			}
		}
		v2, _ := itest.CgroupMounts()
		for _, h := range hs {
			if h.Memory {
				add("mkdir %s && mount --bind %s %s", h.Mount, v2+"/v1-memory", h.Mount)
			}
		}
		add("mount -o remount,ro %s", parent)
	}
	add("mount --bind %s /var/lib", filepath.Join(n.dir, "varlib"))
	add("mount --bind %s /opt", filepath.Join(n.dir, "opt"))
	for i, dir := range n.privateDirs() {
		add("mkdir -p %s && mount --bind %s %s", n.opts.private[i], filepath.Join(n.dir, dir), n.opts.private[i])
	}
	add("mount -t tmpfs -o mode=0755 reaper-test-run /run")
	add("mount -t tmpfs -o mode=1777 reaper-test-shm /dev/shm")
	if n.opts.net {
		add("ip link set lo up")
	}
	return strings.Join(lines, "\n"), nil
}

// shellQuote quotes s for sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// command runs argv in the namespaces, from the groups dirs (see group).
func (n *engineNS) command(ctx context.Context, dirs []string, argv ...string) *exec.Cmd {
	args := append(append([]string{"-c", joinGroups, "sh"}, dirs...), "--", "nsenter", "-t", strconv.Itoa(n.holder.Process.Pid),
		"--mount", "--cgroup")
	if n.opts.net {
		args = append(args, "--net")
	}
	args = append(args, "--")
	cmd := exec.CommandContext(ctx, "sh", append(args, argv...)...)
	cmd.WaitDelay = time.Second
	return cmd
}

// close ends the holder, then waits until no process is left in root: the
// engine's own (conmon, containerd-shim, `podman container cleanup`)
// outlive the commands that started them, and one still running would
// make groups again after the test removed them. It kills what is left
// after the deadline, and removes the groups.
func (n *engineNS) close(t testing.TB) {
	if n.holder != nil && n.holder.Process != nil {
		n.hold.Close()
		done := make(chan struct{})
		go func() { n.holder.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(itest.Deadline):
			n.holder.Process.Kill()
			<-done
		}
	}
	if len(n.groups) > 0 {
		if err := itest.WaitEmpty(n.groups[0]); err != nil {
			t.Errorf("processes of the test's container engine are still in %s: %v", n.groups[0], err)
			os.WriteFile(n.groups[0]+"/cgroup.kill", []byte("1"), 0)
			itest.WaitEmpty(n.groups[0])
		}
	}
	n.removeGroups(t)
}

// removeGroups removes root and every group below it, in each hierarchy.
func (n *engineNS) removeGroups(t testing.TB) {
	for _, dir := range n.groups {
		itest.RemoveCgroupTree(t, dir)
	}
	n.groups = nil
}

// An engine's client: how a test runs it, shared by podman and dockerd.

// outputOf runs cmd and returns its stdout and stderr, interleaved.
func outputOf(cmd *exec.Cmd) (string, error) {
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// mustSucceed runs the client tool with args through run, with a deadline
// of a few minutes (builds are slow under load), and fails the test on an
// error.
func mustSucceed(t testing.TB, tool string, run func(context.Context, ...string) (string, error), args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := run(ctx, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", tool, strings.Join(args, " "), err, out)
	}
	return out
}

// importArgs is the client's command line that imports a tarball on its
// stdin as image name, with Dockerfile instructions changes.
func importArgs(name string, changes []string) []string {
	args := []string{"import"}
	for _, c := range changes {
		args = append(args, "--change="+c)
	}
	return append(args, "-", name)
}
