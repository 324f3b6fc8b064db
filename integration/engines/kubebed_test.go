package engines

// The Kubernetes test bed: a standalone kubelet (static pods from a
// directory, no API server) on containerd's CRI plugin, with runc and
// Debian's CNI bridge plugin, all in namespaces of their own (see
// engineNS): a mount namespace, a cgroup namespace below groups the test
// makes, and a network namespace, in which the pods' bridge and addresses
// stay. The kubelet, containerd, its shim, ctr and crictl are built once per
// machine by .ci/kube-testbed (about 12 minutes on 2 cores), outside the
// clone; the tests find them in $REAPER_KUBE_BIN, or where that script puts
// them, and skip, saying how to build them, when they are not there.

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
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/reaper-init/reaper/integration/itest"
	"github.com/reaper-init/reaper/reaper/cgroup"
	"golang.org/x/sys/unix"
)

// kubeNode is the kubelet's node name: a static pod NAME runs as
// NAME-reaper-kube.
const kubeNode = "reaper-kube"

// kubeTools are the test bed's binaries, in its bin directory.
var kubeTools = []string{"kubelet", "containerd", "containerd-shim-runc-v2", "ctr", "crictl"}

// kubeBinDir returns the directory of the test bed's binaries, or skips the
// test, saying how to build them, when they are not there.
func kubeBinDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("REAPER_KUBE_BIN")
	script := filepath.Join(itest.RepoRoot(t), ".ci/kube-testbed")
	if dir == "" {
		out, err := exec.Command(script, "dir").Output()
		if err != nil {
			t.Fatalf("%s dir: %v", script, err)
		}
		dir = strings.TrimSpace(string(out))
	}
	for _, tool := range kubeTools {
		if _, err := os.Stat(filepath.Join(dir, tool)); err != nil {
			itest.Skip(t, "no Kubernetes test bed in %s (%v): build it once per machine with `%s build` "+
				"(about 12 minutes on 2 cores; .ci/run does), or set REAPER_KUBE_BIN to a directory with %s",
				dir, err, script, strings.Join(kubeTools, ", "))
		}
	}
	return dir
}

// kubeHostTools are what the test bed takes from Debian: runc (runc), the
// CNI plugins (containernetworking-plugins), the pause process
// (catatonit).
var kubeHostTools = map[string]string{
	"/usr/lib/cni/bridge":     "containernetworking-plugins",
	"/usr/lib/cni/host-local": "containernetworking-plugins",
	"/usr/lib/cni/loopback":   "containernetworking-plugins",
	"/usr/bin/catatonit":      "catatonit",
}

// requireKubeHostTools skips the test when one of kubeHostTools is missing.
func requireKubeHostTools(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("runc"); err != nil {
		itest.Skip(t, "runc not installed (apt-get install runc): %v", err)
	}
	for path, pkg := range kubeHostTools {
		if _, err := os.Stat(path); err != nil {
			itest.Skip(t, "%s not installed (apt-get install %s): %v", path, pkg, err)
		}
	}
}

// kubeBed is a running test bed.
type kubeBed struct {
	dir        string
	bin        string
	ns         *engineNS
	cli        []string // the groups of ctr and crictl
	sock       string   // containerd's
	manifests  string   // the kubelet's staticPodPath
	containerd *itest.Daemon
	kubelet    *itest.Daemon
	events     *itest.Lines // the runtime's events (`ctr events`)
	host       hostState
}

// hostState is what of the host the kubelet changes or could.
type hostState struct {
	sysctls map[string]string
	paths   map[string]bool // whether each fixed path of the kubelet existed
	network string
}

// kubeletSysctls are what the kubelet sets at start, whatever its
// configuration says: they are restored when it has stopped.
var kubeletSysctls = []string{"vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops"}

// kubeletFixedPaths are what the kubelet and containerd write whatever
// their configurations say: in the test bed's mount namespace, they must
// not appear on the host.
var kubeletFixedPaths = []string{"/var/lib/kubelet", "/var/log/containers", "/var/log/pods", "/run/containerd", "/opt/containerd"}

// kubePause is the pod sandbox's image: catatonit -P, the pause process of
// podman's pods, as registry.k8s.io/pause cannot be pulled here.
const kubePause = "localhost/reaper-test-pause:1"

// newKubeBed starts a test bed, or skips the test when it cannot run here.
// It ends with the test.
func newKubeBed(t testing.TB) *kubeBed {
	t.Helper()
	itest.RequireRoot(t)
	b := &kubeBed{bin: kubeBinDir(t), dir: t.TempDir()}
	requireKubeHostTools(t)
	lockKubeBed(t, b.bin)
	b.sock = filepath.Join(b.dir, "containerd.sock")
	b.manifests = filepath.Join(b.dir, "manifests")
	for _, d := range []string{"manifests", "staging", "cni", "ipam", "containerd", "kubelet", "certs", "pod-logs", "volume-plugins"} {
		if err := os.Mkdir(filepath.Join(b.dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	b.host = observeHost()
	b.ns = newEngineNSWith(t, b.dir, "kube", engineOptions{net: true, private: []string{"/var/log"}, pidsMax: 4096})
	t.Cleanup(func() { b.close(t) })
	b.cli = b.ns.group(t, "cli")
	b.startContainerd(t)
	b.importImage(t, ociImage{name: kubePause, root: pauseRoot(t), entrypoint: []string{"/catatonit", "-P"}})
	b.startKubelet(t)
	return b
}

// lockKubeBed waits until no other test bed of this machine runs, and
// keeps others waiting until the test ends: the sysctls the kubelet sets
// are the whole machine's, and one test bed restoring them while another's
// kubelet runs would restore the kubelet's values. The lock is a flock on
// the test bed's bin directory.
func lockKubeBed(t testing.TB, dir string) {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("opening %s to lock it: %v", dir, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	end := time.Now().Add(15 * time.Minute)
	for logged := false; ; logged = true {
		err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return
		}
		if err != unix.EWOULDBLOCK || time.Now().After(end) {
			t.Fatalf("locking %s against the machine's other test beds: %v", dir, err)
		}
		if !logged {
			t.Logf("waiting for another Kubernetes test bed of this machine to end (a lock on %s)", dir)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// observeHost records the host's state the kubelet may change.
func observeHost() hostState {
	h := hostState{sysctls: map[string]string{}, paths: map[string]bool{}, network: hostNetwork()}
	for _, name := range kubeletSysctls {
		data, _ := os.ReadFile("/proc/sys/" + name)
		h.sysctls[name] = strings.TrimSpace(string(data))
	}
	for _, p := range kubeletFixedPaths {
		_, err := os.Lstat(p)
		h.paths[p] = err == nil
	}
	return h
}

// restore puts back the sysctls, and checks the rest of what h recorded.
func (h hostState) restore(t testing.TB) {
	for name, value := range h.sysctls {
		if err := os.WriteFile("/proc/sys/"+name, []byte(value), 0); err != nil {
			t.Errorf("restoring %s=%s: %v", name, value, err)
		}
	}
	now := observeHost()
	for p, existed := range h.paths {
		if now.paths[p] && !existed {
			t.Errorf("%s appeared on the host while the test bed ran: the kubelet or containerd wrote outside its namespace", p)
		}
	}
	if now.network != h.network {
		t.Errorf("the host's network settings changed while the test bed ran: %s, then %s", h.network, now.network)
	}
}

// pauseRoot makes the pause image's root: catatonit alone.
func pauseRoot(t testing.TB) string {
	t.Helper()
	root := t.TempDir()
	if err := copyFile("/usr/bin/catatonit", filepath.Join(root, "catatonit")); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(root, "catatonit"), 0o755)
	return root
}

// containerdConfig is containerd's configuration: its directories, socket
// and CNI configuration the test's; the CRI plugin with runc through
// cgroupfs, no negative oom_score_adj (nobody may set one here: the
// machine's bounding set lacks CAP_SYS_RESOURCE, and runc would fail every
// sandbox), no AppArmor profile loaded into the host's kernel; the pause
// image pinned; no configuration of the host imported.
const containerdConfig = `version = 3
root = '{{dir}}/containerd/root'
state = '{{dir}}/containerd/state'
temp = '{{dir}}/containerd/tmp'
imports = []

[grpc]
  address = '{{sock}}'
[ttrpc]
  address = '{{sock}}.ttrpc'

[plugins]
  [plugins.'io.containerd.nri.v1.nri']
    disable = true
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = '{{pause}}'
  [plugins.'io.containerd.cri.v1.runtime']
    restrict_oom_score_adj = true
    disable_apparmor = true
    enable_cdi = false
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = 'io.containerd.runc.v2'
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          SystemdCgroup = false
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ['/usr/lib/cni']
      conf_dir = '{{dir}}/cni'
      max_conf_num = 1
`

// cniConfig is the pods' network: a bridge in the test bed's network
// namespace, addresses from a range of the test's, no NAT, no gateway.
const cniConfig = `{"cniVersion": "1.0.0", "name": "reaper-test", "plugins": [{"type": "bridge", "bridge": "cni0",
  "isGateway": false, "ipMasq": false,
  "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.0.0/24"}]], "dataDir": "{{dir}}/ipam"}}]}
`

// expand replaces {{dir}}, {{sock}} and {{pause}} in a template.
func (b *kubeBed) expand(template string) string {
	return strings.NewReplacer("{{dir}}", b.dir, "{{sock}}", b.sock, "{{pause}}", kubePause).Replace(template)
}

// writeFile writes a file of the test bed's directory.
func (b *kubeBed) writeFile(t testing.TB, name, data string) string {
	t.Helper()
	path := filepath.Join(b.dir, name)
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// env is the environment of the test bed's daemons: its binaries first on
// PATH (containerd runs the shim it finds there).
func (b *kubeBed) env() []string {
	return append(os.Environ(), "PATH="+b.bin+":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
}

// startContainerd starts containerd and waits until it serves, then follows
// its events.
func (b *kubeBed) startContainerd(t testing.TB) {
	t.Helper()
	b.writeFile(t, "cni/10-reaper-test.conflist", b.expand(cniConfig))
	b.writeFile(t, "crictl.yaml", "") // not /etc/crictl.yaml
	config := b.writeFile(t, "containerd.toml", b.expand(containerdConfig))
	cmd := b.ns.command(context.Background(), b.ns.group(t, "containerd"), filepath.Join(b.bin, "containerd"), "--config", config)
	cmd.Env = b.env()
	b.containerd = itest.StartDaemon(t, "containerd", cmd)
	b.containerd.WaitLog(t, regexp.MustCompile(`containerd successfully booted`))
	ctx, cancel := context.WithCancel(context.Background())
	events := b.ctrCommand(ctx, "events")
	b.events = itest.NewLines()
	out, err := events.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := events.Start(); err != nil {
		t.Fatal(err)
	}
	go b.events.Collect(out)
	t.Cleanup(func() {
		cancel()
		events.Wait()
	})
}

// kubeletConfig is the kubelet's configuration: static pods from a
// directory, containerd's CRI, cgroupfs on this machine's cgroup v1
// hierarchies, no QoS groups nor node allocatable (so the kubelet makes no
// cgroup: it could not, see startKubelet), nothing that would change the
// host (iptables, oom_score_adj), no eviction nor image garbage collection
// (the images cannot be pulled again), and crash restarts backed off 1 s at
// the most, not 10 s to 5 minutes.
const kubeletConfig = `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
staticPodPath: {{dir}}/manifests
containerRuntimeEndpoint: unix://{{sock}}
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
failCgroupV1: false
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
address: 127.0.0.1
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
podLogsDir: {{dir}}/pod-logs
volumePluginDir: {{dir}}/volume-plugins
makeIPTablesUtilChains: false
oomScoreAdj: 0
evictionHard: {}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
resolvConf: ""
featureGates:
  KubeletCrashLoopBackOffMax: true
crashLoopBackOff:
  maxContainerRestartPeriod: 1s
`

// kubeletMounts runs the kubelet in a mount namespace of its own, below
// the test bed's, with the v1 memory hierarchy mounted read-only (rooted,
// in the test bed's cgroup namespace, at the test's own memory group). The
// kubelet refuses to start where no memory hierarchy is mounted; runc,
// which would make groups in it, must not see it (see engineNS), and
// nothing of the test may write to it.
const kubeletMounts = `set -e
mount -t cgroup -o memory reaper-test-memory /sys/fs/cgroup/memory
mount -o remount,bind,ro /sys/fs/cgroup/memory
exec "$@"`

// startKubelet starts the kubelet. It reads its static pods' directory
// from the start: a test needs to wait for nothing more.
func (b *kubeBed) startKubelet(t testing.TB) {
	t.Helper()
	config := b.writeFile(t, "kubelet.yaml", b.expand(kubeletConfig))
	argv := []string{filepath.Join(b.bin, "kubelet"), "--config=" + config, "--root-dir=" + filepath.Join(b.dir, "kubelet"),
		"--cert-dir=" + filepath.Join(b.dir, "certs"), "--hostname-override=" + kubeNode, "--v=2"}
	for _, h := range itest.CgroupHierarchies() {
		if h.Memory {
			argv = append([]string{"unshare", "--mount", "--", "sh", "-c", kubeletMounts, "sh"}, argv...)
			break
		}
	}
	cmd := b.ns.command(context.Background(), b.ns.group(t, "kubelet"), argv...)
	cmd.Env = b.env()
	b.kubelet = itest.StartDaemon(t, "kubelet", cmd)
}

// close stops the kubelet first (it would start the static pods again),
// removes every pod, stops containerd, kills the shims that outlive it
// (one can outlive its sandbox), ends the namespaces and removes the
// groups, then restores what the kubelet changed on the host.
func (b *kubeBed) close(t testing.TB) {
	if b.kubelet != nil {
		b.kubelet.Stop(t)
	}
	if b.containerd != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		if out, err := b.crictl(ctx, "rmp", "--force", "--all"); err != nil {
			t.Errorf("crictl rmp --force --all: %v\n%s", err, out)
		}
		cancel()
		b.containerd.Stop(t)
	}
	if b.ns != nil {
		b.killShims(t)
		b.ns.close(t)
	}
	b.host.restore(t)
	if t.Failed() {
		for _, d := range []*itest.Daemon{b.kubelet, b.containerd} {
			if d != nil {
				t.Logf("%s's output, the end:\n%s", d.Name, itest.Tail(d.Log.String(), 6000))
			}
		}
	}
}

// killShims SIGKILLs the containerd shims still in the test bed's groups:
// the test started them, through containerd.
func (b *kubeBed) killShims(t testing.TB) {
	shim := filepath.Join(b.bin, "containerd-shim-runc-v2")
	pids, _ := cgroup.TreeProcs(b.ns.groups[0])
	for _, pid := range pids {
		if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); exe == shim {
			t.Logf("a shim outlived containerd: pid %d, killed", pid)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// ctrCommand is a ctr command line in the test bed's namespace k8s.io, the
// CRI's.
func (b *kubeBed) ctrCommand(ctx context.Context, args ...string) *exec.Cmd {
	cmd := b.ns.command(ctx, b.cli, append([]string{filepath.Join(b.bin, "ctr"), "--address=" + b.sock, "--namespace=k8s.io"}, args...)...)
	cmd.Env = b.env()
	return cmd
}

// crictl runs crictl on containerd's CRI, in the test bed's namespaces
// (`crictl exec` streams from containerd's server on its loopback), and
// returns its output.
func (b *kubeBed) crictl(ctx context.Context, args ...string) (string, error) {
	return outputOf(b.crictlCommand(ctx, args...))
}

// crictlCommand is a crictl command line (see crictl).
func (b *kubeBed) crictlCommand(ctx context.Context, args ...string) *exec.Cmd {
	cmd := b.ns.command(ctx, b.cli, append([]string{filepath.Join(b.bin, "crictl"), "--runtime-endpoint=unix://" + b.sock,
		"--image-endpoint=unix://" + b.sock, "--config=" + filepath.Join(b.dir, "crictl.yaml"), "--timeout=60s"}, args...)...)
	cmd.Env = b.env()
	return cmd
}

// crictlJSON runs crictl and decodes its JSON output into v.
func (b *kubeBed) crictlJSON(t testing.TB, v any, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := b.crictlCommand(ctx, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("crictl %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	if err := json.Unmarshal(stdout.Bytes(), v); err != nil {
		t.Fatalf("crictl %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
}

// mustCrictl runs crictl and fails the test on an error.
func (b *kubeBed) mustCrictl(t testing.TB, args ...string) string {
	t.Helper()
	return mustSucceed(t, "crictl", b.crictl, args...)
}

// importImage writes img as an OCI archive and imports it into the CRI's
// namespace.
func (b *kubeBed) importImage(t testing.TB, img ociImage) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	archive := filepath.Join(t.TempDir(), "image.tar")
	if err := writeOCIArchive(ctx, img, archive); err != nil {
		t.Fatalf("image %s: %v", img.name, err)
	}
	if out, err := outputOf(b.ctrCommand(ctx, "images", "import", archive)); err != nil {
		t.Fatalf("ctr images import %s: %v\n%s", img.name, err, out)
	}
}

// addPod moves a static pod's manifest into the kubelet's directory, in one
// rename (the kubelet parses a half-written file, and logs an error), and
// returns its path.
func (b *kubeBed) addPod(t testing.TB, name, manifest string) string {
	t.Helper()
	staged := b.writeFile(t, filepath.Join("staging", name+".yaml"), manifest)
	path := filepath.Join(b.manifests, name+".yaml")
	if err := os.Rename(staged, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// ---- following a log file ----------------------------------------------------------

// followFile follows the file at path, which another process appends to,
// line by line, until owner ends.
func followFile(t testing.TB, owner itest.Cleaner, path string) *itest.Lines {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	ino, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		t.Fatalf("inotify: %v", err)
	}
	if _, err := unix.InotifyAddWatch(ino, path, unix.IN_MODIFY); err != nil {
		t.Fatalf("inotify on %s: %v", path, err)
	}
	stop, stopped, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	l := itest.NewLines()
	go l.Collect(&tailReader{f: f, ino: ino, stop: int(stop.Fd())})
	owner.Cleanup(func() {
		stopped.Close()
		<-l.Closed
		f.Close()
		stop.Close()
		unix.Close(ino)
	})
	return l
}

// tailReader reads a file that grows: at its end, it waits for inotify to
// say it has grown, or for its stop pipe to close (then it ends).
type tailReader struct {
	f    *os.File
	ino  int
	stop int
}

func (r *tailReader) Read(p []byte) (int, error) {
	buf := make([]byte, 4096)
	for {
		n, err := r.f.Read(p)
		if n > 0 || (err != nil && err != io.EOF) {
			return n, err
		}
		fds := []unix.PollFd{{Fd: int32(r.ino), Events: unix.POLLIN}, {Fd: int32(r.stop), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, -1); err != nil && err != unix.EINTR {
			return 0, err
		}
		if fds[1].Revents != 0 {
			return 0, io.EOF
		}
		unix.Read(r.ino, buf)
	}
}

// taskExit is containerd's event of a container's process exiting.
type taskExit struct {
	ContainerID string `json:"container_id"`
	ID          string `json:"id"`
	ExitStatus  int    `json:"exit_status"`
}

// exitOf waits for containerd's event of the exit of container id's main
// process, and returns its status: what the CRI records, and the kubelet
// reports.
func (b *kubeBed) exitOf(t testing.TB, id string) int {
	t.Helper()
	re := regexp.MustCompile(`/tasks/exit (\{"container_id":"` + id + `","id":"` + id + `".*)$`)
	for _, line := range b.events.WaitFor(t, re) {
		if m := re.FindStringSubmatch(line); m != nil {
			var e taskExit
			if err := json.Unmarshal([]byte(m[1]), &e); err != nil {
				t.Fatalf("containerd's event %q: %v", line, err)
			}
			return e.ExitStatus
		}
	}
	panic("unreachable")
}
