package engines

// Kubernetes pods, for real: the example manifests, as they are but for
// their images, run by a standalone kubelet on containerd's CRI (see
// kubebed_test.go), and each also with tini as the container's init, the
// baseline. A pod with reaper as its container's PID 1 is probed, exec'd
// into, crashed twice and restarted by the kubelet, then deleted; a pod
// whose containers share one PID namespace is deleted.

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/reaper-init/reaper/integration/itest"
)

// exampleWeb is /usr/local/bin/example-web in the test's image, the
// examples' server: it serves on --port from a listener in a session of its
// own, which notes SIGTERM and serves on (a daemon that would keep the
// port once its parent is gone), with a worker in the background that
// stops on SIGTERM. It drains on SIGUSR1, exits 0 on SIGTERM and crashes
// with 3 on SIGUSR2. Each process says what it is and what it gets on the
// server's stdout, the container's log.
//
// --drain is the preStop hook: the server drains, says so, and the hook
// returns once it has. --check [LABEL] is the liveness probe (and what the
// test execs): the server runs. It leaves a process behind, as a check
// with a background job does, which waits until the check has exited,
// says whose child it has become, and exits.
const exampleWeb = `#!/bin/sh
pidfile=/tmp/example-web.pid
case "$1" in
--drain)
	rm -f /tmp/example-web.drained
	kill -USR1 "$(cat $pidfile)" || exit 1
	for i in $(seq 100); do
		[ -e /tmp/example-web.drained ] && exit 0
		sleep 0.05
	done
	exit 1;;
--check)
	server=$(cat $pidfile) || exit 1
	sh -c 'while [ "$(cut -d" " -f4 /proc/$$/stat)" = "$3" ]; do sleep 0.02; done
		echo "orphan $1 $$ of $(cut -d" " -f4 /proc/$$/stat)" > "/proc/$2/fd/1"' \
		orphan "${2:-probe}" "$server" $$ </dev/null >/dev/null 2>&1 &
	kill -0 "$server"
	exit;;
esac
port=8080
for arg; do case "$arg" in --port=*) port=${arg#--port=};; esac; done
echo $$ > $pidfile
trap 'echo drain; touch /tmp/example-web.drained' USR1
trap 'echo term; exit 0' TERM
trap 'echo crash; exit 3' USR2
sh -c 'trap "echo worker-term $$; exit 0" TERM; echo "worker $$"; sleep 86400 & wait' </dev/null &
setsid /usr/local/bin/helper listen -note-term ":$port" /dev/stdout </dev/null &
sleep 86400 </dev/null &
keep=$!
echo "ready $$"
while kill -0 $keep 2>/dev/null; do wait $keep; done
`

// logShipper is /usr/local/bin/log-shipper in the test's image, the shared
// PID namespace example's sidecar: its shipper notes any SIGTERM it gets;
// on SIGTERM the sidecar waits until the web container's init and server
// are gone (their last lines shipped), then stops its shipper and exits 0.
const logShipper = `#!/bin/sh
sh -c 'trap "echo shipper-term; exit 0" TERM; echo "shipper $$"; sleep 86400 & wait' </dev/null &
shipper=$!
trap 'echo sidecar-term
	while pidof reaper tini example-web >/dev/null; do sleep 0.05; done
	echo web-gone
	kill $shipper
	wait $shipper
	exit 0' TERM
sleep 86400 </dev/null &
echo "sidecar $$"
wait
`

// kubeTini is the baseline's init in the test's image: Debian's static
// tini.
const kubeTini = "/usr/bin/tini-static"

// kubeCase is one pod of TestKubePods.
type kubeCase struct {
	name     string
	example  string // the manifest's file in examples/
	reaper   bool   // false: tini is the container's init, the baseline
	shared   bool   // shareProcessNamespace: true
	manifest string // as the kubelet runs it
	pod      string // its name
}

// kubeCases are the pods of TestKubePods and BenchmarkKubePodDeletion.
var kubeCases = []kubeCase{
	{name: "pid1/reaper", example: "kubernetes-pod.yaml", reaper: true},
	{name: "pid1/tini", example: "kubernetes-pod.yaml"},
	{name: "shared-pid/reaper", example: "kubernetes-pod-shared-pid.yaml", reaper: true, shared: true},
	{name: "shared-pid/tini", example: "kubernetes-pod-shared-pid.yaml", shared: true},
}

func TestKubePods(t *testing.T) {
	t.Parallel() // with TestDocker, after the other tests: most of their time is spent waiting
	b := newKubeBed(t)
	for _, c := range kubeCases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			p := startKubeCase(t, b, c, "")
			if !c.shared {
				t.Run("exec and probe orphans", func(t *testing.T) { checkOrphansReaped(t, p) })
				t.Run("crash restarts", func(t *testing.T) { checkCrashRestarts(t, p, 2) })
			}
			t.Run("deletion", func(t *testing.T) { checkDeletion(t, p) })
		})
	}
}

// startKubeCase builds the case's image, runs its pod and waits until it is
// up. run names the image apart from the other runs of the case: the
// kubelet knows a static pod by its manifest's contents.
func startKubeCase(t testing.TB, b *kubeBed, c kubeCase, run string) *kubePod {
	t.Helper()
	if _, err := os.Stat(kubeTini); err != nil && !c.reaper {
		itest.Skip(t, "no static tini for the baseline (apt-get install tini): %v", err)
	}
	slug := strings.ReplaceAll(c.name, "/", "-") + run
	image := "localhost/reaper-kube-" + slug + ":1.0"
	marker := fmt.Sprintf("kube-%d-%s", os.Getpid(), slug)
	b.importImage(t, kubeTestImage(t, image, marker))
	c.manifest = exampleManifest(t, c.example, image)
	if !c.reaper {
		c.manifest = tiniVariant(t, c.manifest, c.shared)
	}
	c.pod = manifestMatch(t, c.manifest, `(?m)^metadata:\n  name: (\S+)$`)
	return runKubePod(t, b, c, marker)
}

// kubeTestImage is the image that stands in for the examples' images:
// busybox, reaper at /reaper, tini at /tini, and in /usr/local/bin
// example-web, log-shipper and the tests' helper (its listener). Every
// process started from it carries REAPER_TEST_PAYLOAD=marker.
func kubeTestImage(t testing.TB, name, marker string) ociImage {
	t.Helper()
	root := t.TempDir()
	busyboxInto(t, filepath.Join(root, "bin"), "sh", "setsid", "sleep", "cat", "cut", "seq", "rm", "touch", "pidof", "ps")
	files := map[string]string{"reaper": itest.Bin().Reaper, "usr/local/bin/helper": itest.Bin().Helper}
	if _, err := os.Stat(kubeTini); err == nil {
		files["tini"] = kubeTini
	}
	for dst, src := range files {
		if err := copyFile(src, filepath.Join(root, dst)); err != nil {
			t.Fatal(err)
		}
		os.Chmod(filepath.Join(root, dst), 0o755)
	}
	for dst, script := range map[string]string{"usr/local/bin/example-web": exampleWeb, "usr/local/bin/log-shipper": logShipper} {
		if err := os.WriteFile(filepath.Join(root, dst), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.MkdirAll(filepath.Join(root, "tmp"), 0o1777)
	return ociImage{name: name, root: root, entrypoint: []string{"/reaper", "--"},
		env: []string{"PATH=/usr/local/bin:/bin", "REAPER_TEST_PAYLOAD=" + marker}}
}

// exampleManifest reads examples/file with every image replaced by image:
// all the tests change in an example.
func exampleManifest(t testing.TB, file, image string) string {
	t.Helper()
	manifest := string(itest.MustRead(t, filepath.Join(itest.RepoRoot(t), "examples", file)))
	return regexp.MustCompile(`(?m)^(\s+image: )\S+$`).ReplaceAllString(manifest, "${1}"+image)
}

// tiniVariant is the baseline of an example: tini in reaper's place (as a
// subreaper when it is not PID 1, its best case there), and a name of its
// own.
func tiniVariant(t testing.TB, manifest string, shared bool) string {
	t.Helper()
	tini := `command: ["/tini", "--"]`
	if shared {
		tini = `command: ["/tini", "-s", "--"]`
	}
	manifest = replaceOnce(t, manifest, `command: ["/reaper", "--grace=10s", "--"]`, tini)
	name := manifestMatch(t, manifest, `(?m)^metadata:\n  name: (\S+)$`)
	return replaceOnce(t, manifest, "  name: "+name+"\n", "  name: "+name+"-tini\n")
}

// replaceOnce replaces the one occurrence of old in s.
func replaceOnce(t testing.TB, s, old, new string) string {
	t.Helper()
	if n := strings.Count(s, old); n != 1 {
		t.Fatalf("%d occurrences of %q in the manifest, want 1", n, old)
	}
	return strings.Replace(s, old, new, 1)
}

// manifestMatch returns the first submatch of pattern in a manifest.
func manifestMatch(t testing.TB, manifest, pattern string) string {
	t.Helper()
	m := regexp.MustCompile(pattern).FindStringSubmatch(manifest)
	if m == nil {
		t.Fatalf("the manifest has nothing matching %s", pattern)
	}
	return m[1]
}

// ---- a pod -----------------------------------------------------------------------

// kubePod is a static pod of the test bed.
type kubePod struct {
	owner  itest.Cleaner // the case's test: the pod lasts as long
	b      *kubeBed
	c      kubeCase
	marker string
	file   string // the manifest in the kubelet's directory
	id     string // the sandbox's
	pause  int    // the sandbox's process, on the host
	period time.Duration
	web    *kubeRun // the web container's current run
	side   *kubeRun // the sidecar's, in the shared-PID pod
}

// runKubePod starts c's pod and waits until its processes are up.
func runKubePod(t testing.TB, b *kubeBed, c kubeCase, marker string) *kubePod {
	t.Helper()
	p := &kubePod{owner: t, b: b, c: c, marker: marker}
	seconds, _ := strconv.Atoi(manifestMatch(t, c.manifest, `terminationGracePeriodSeconds: (\d+)`))
	p.period = time.Duration(seconds) * time.Second
	began := time.Now()
	p.file = b.addPod(t, c.pod, c.manifest)
	t.Cleanup(func() { os.Remove(p.file) })
	p.web = p.waitRun(t, "web", 0, "ready", "worker", "listening")
	if c.shared {
		p.side = p.waitRun(t, "log-shipper", 0, "sidecar", "shipper")
	}
	t.Logf("%s: up %v after its manifest", c.pod, time.Since(began).Round(time.Millisecond))
	p.checkInit(t)
	return p
}

// checkInit checks that the web container's init is PID 1 of its
// container, or, in a shared PID namespace, that the pod's pause process
// is.
func (p *kubePod) checkInit(t testing.TB) {
	t.Helper()
	inner, _ := itest.InnermostPID(p.web.init)
	if !p.c.shared {
		if inner != 1 {
			t.Fatalf("the init (host pid %d) is pid %d of its container, want 1", p.web.init, inner)
		}
		return
	}
	if inner == 1 {
		t.Fatalf("the init (host pid %d) is PID 1 of a shared PID namespace, want the pause process", p.web.init)
	}
	if n, _ := itest.InnermostPID(p.pause); n != 1 || !sameNamespace(p.pause, p.web.init) {
		t.Fatalf("the pause process (host pid %d, pid %d) is not PID 1 of the web container's namespace", p.pause, n)
	}
}

// sameNamespace tells whether two processes are in the same PID namespace.
func sameNamespace(a, b int) bool {
	na, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", a))
	nb, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", b))
	return err == nil && na == nb
}

// kubeRun is one run (one attempt) of a container.
type kubeRun struct {
	id      string // the container's
	attempt int
	init    int            // its main process, on the host
	log     *itest.Lines   // its log, as the CRI writes it
	ns      map[string]int // the processes that announced themselves, in the container's PID namespace
	pids    map[string]int // the same on the host, "init" included
	fds     map[string]int // their pidfds
}

// waitRun waits until attempt of container name runs and the processes
// named announce have announced themselves.
func (p *kubePod) waitRun(t testing.TB, name string, attempt int, announce ...string) *kubeRun {
	t.Helper()
	r := &kubeRun{attempt: attempt, ns: map[string]int{}, pids: map[string]int{}, fds: map[string]int{}}
	var st criStatus
	r.id, st = p.waitContainer(t, name, attempt)
	r.init, r.log = st.Info.Pid, followFile(t, p.owner, st.Status.LogPath)
	for _, kind := range announce {
		line := r.log.WaitFor(t, criLine(kind+` [0-9]+`))
		for _, l := range line {
			if m := criLine(kind + ` ([0-9]+)`).FindStringSubmatch(l); m != nil {
				r.ns[kind], _ = strconv.Atoi(m[1])
			}
		}
	}
	r.pids["init"] = r.init
	for _, kind := range announce {
		if r.pids[kind] = hostPID(r.init, r.ns[kind]); r.pids[kind] == 0 {
			t.Fatalf("%s: no process below the init (host pid %d) is the %s, pid %d", name, r.init, kind, r.ns[kind])
		}
	}
	for kind, pid := range r.pids {
		r.fds[kind] = itest.PidfdsUntil(t, p.owner, []int{pid})[0]
	}
	return r
}

// gotTerm tells whether the run's worker or listener noted a SIGTERM in
// log, its pid with it.
func (r *kubeRun) gotTerm(log, who string) bool {
	announced := map[string]string{"worker": "worker", "listener": "listening"}[who]
	return noted(log, who+"-term "+strconv.Itoa(r.ns[announced]))
}

// running lists the processes of the run that still run.
func (r *kubeRun) running() []string {
	var names []string
	for kind, fd := range r.fds {
		if len(itest.Running([]int{fd}, []int{r.pids[kind]})) > 0 {
			names = append(names, kind)
		}
	}
	return names
}

// ---- the CRI ---------------------------------------------------------------------

// criStatus is what `crictl inspect` and `crictl inspectp` say.
type criStatus struct {
	Status struct {
		ID       string `json:"id"`
		State    string `json:"state"`
		ExitCode int    `json:"exitCode"`
		Reason   string `json:"reason"`
		LogPath  string `json:"logPath"`
		Metadata struct {
			Name    string `json:"name"`
			Attempt int    `json:"attempt"`
		} `json:"metadata"`
	} `json:"status"`
	Info struct {
		Pid int `json:"pid"`
	} `json:"info"`
}

// criList is what `crictl pods -o json` and `crictl ps -o json` say.
type criList struct {
	Items      []criItem `json:"items"`
	Containers []criItem `json:"containers"`
}

type criItem struct {
	ID       string `json:"id"`
	State    string `json:"state"`
	Metadata struct {
		Name    string `json:"name"`
		Attempt int    `json:"attempt"`
	} `json:"metadata"`
}

// waitContainer polls the CRI until attempt of container name of the pod
// runs, and returns its id and status. It learns the pod's sandbox on the
// way.
func (p *kubePod) waitContainer(t testing.TB, name string, attempt int) (string, criStatus) {
	t.Helper()
	end := time.Now().Add(2 * time.Minute)
	for {
		if p.id == "" {
			var pods criList
			p.b.crictlJSON(t, &pods, "pods", "--state=ready", "--output=json")
			for _, it := range pods.Items {
				if it.Metadata.Name == p.c.pod+"-"+kubeNode {
					p.id = it.ID
					var st criStatus
					p.b.crictlJSON(t, &st, "inspectp", it.ID)
					p.pause = st.Info.Pid
				}
			}
		}
		if p.id != "" {
			var ctrs criList
			p.b.crictlJSON(t, &ctrs, "ps", "--pod="+p.id, "--state=running", "--output=json")
			for _, it := range ctrs.Containers {
				if it.Metadata.Name == name && it.Metadata.Attempt == attempt {
					return it.ID, p.b.criStatus(t, it.ID)
				}
			}
		}
		if p.b.kubelet.Exited() {
			t.Fatalf("the kubelet exited: %v\n%s", p.b.kubelet.Cmd.ProcessState, itest.Tail(p.b.kubelet.Log.String(), 4000))
		}
		if time.Now().After(end) {
			t.Fatalf("%s: container %s, attempt %d, not running after 2 minutes\n%s", p.c.pod, name, attempt,
				itest.Tail(p.b.kubelet.Log.String(), 4000))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// criStatus is the CRI's status of a container.
func (b *kubeBed) criStatus(t testing.TB, id string) criStatus {
	t.Helper()
	var st criStatus
	b.crictlJSON(t, &st, "inspect", id)
	return st
}

// criLine matches a line of a container's log, as the CRI writes it
// (time, stream, tag, text), whose text matches text.
func criLine(text string) *regexp.Regexp {
	return regexp.MustCompile(`^\S+ (?:stdout|stderr) F ` + text + `$`)
}

// ---- the checks --------------------------------------------------------------------

// checkOrphansReaped: a process exec'd into a container (the liveness
// probe's, and `crictl exec`'s, which streams as `kubectl exec` does) is
// its shim's child, but what it leaves behind is given by the kernel to
// the container's PID 1, which must reap it: a zombie is never reaped
// otherwise.
func checkOrphansReaped(t testing.TB, p *kubePod) {
	r := p.web
	if out := p.b.mustCrictl(t, "exec", r.id, "/usr/local/bin/example-web", "--check", "exec"); out != "" {
		t.Logf("crictl exec: %s", out)
	}
	orphans := r.log.WaitCount(t, criLine(`orphan exec [0-9]+ of [0-9]+`), 1)
	orphans = append(orphans, r.log.WaitCount(t, criLine(`orphan probe [0-9]+ of [0-9]+`), 1)...)
	for _, line := range orphans {
		m := criLine(`orphan (\S+) ([0-9]+) of ([0-9]+)`).FindStringSubmatch(line)
		pid, _ := strconv.Atoi(m[2])
		if m[3] != "1" {
			t.Errorf("the orphan of the %s (pid %s) became the child of pid %s, want 1, the init", m[1], m[2], m[3])
		}
		state := waitReaped(r.init, pid, 10*time.Second)
		t.Logf("measured: %s: the orphan of the %s, pid %d of the container: %s", p.c.name, m[1], pid, state)
		if state != "reaped" {
			t.Errorf("the orphan of the %s (pid %d of the container) is not reaped by the init: %s", m[1], pid, state)
		}
	}
}

// waitReaped waits until the process below root whose pid in its own
// namespace is inner is gone, and says how it ended: "reaped", or its
// state when within has passed.
func waitReaped(root, inner int, within time.Duration) string {
	end := time.Now().Add(within)
	for {
		pid := hostPID(root, inner)
		if pid == 0 {
			return "reaped"
		}
		if time.Now().After(end) {
			return fmt.Sprintf("still there after %v, state %c", within, itest.ProcState(pid))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkCrashRestarts crashes the server n times (SIGUSR2: it exits 3, as
// a server that fails does): each time the kubelet restarts the container
// (restartPolicy: Always), and the new run must be the only one, with no
// process of the earlier one left, its listener bound to the port again.
func checkCrashRestarts(t testing.TB, p *kubePod, n int) {
	for i := 1; i <= n; i++ {
		old := p.web
		began := time.Now()
		if err := syscall.Kill(old.pids["ready"], syscall.SIGUSR2); err != nil {
			t.Fatalf("crashing the server: %v", err)
		}
		code := p.b.exitOf(t, old.id)
		exited := time.Since(began)
		p.web = p.waitRun(t, "web", old.attempt+1, "ready", "worker", "listening")
		left, stale, servers := old.running(), p.stale(), p.servers()
		oldLog := old.log.String()
		recorded := p.b.criStatus(t, old.id)
		t.Logf("measured: %s: crash %d: exit code %d (the CRI: %d, %s) %v after the crash, attempt %d up %v after it; "+
			"the earlier run's listener got SIGTERM: %v, its worker: %v",
			p.c.name, i, code, recorded.Status.ExitCode, recorded.Status.Reason, exited.Round(time.Millisecond), p.web.attempt,
			time.Since(began).Round(time.Millisecond), old.gotTerm(oldLog, "listener"), old.gotTerm(oldLog, "worker"))
		if code != 3 || recorded.Status.ExitCode != 3 {
			t.Errorf("crash %d: the container's exit code: %d, the CRI's record %d, want the server's 3\n%s",
				i, code, recorded.Status.ExitCode, oldLog)
		}
		if len(left) > 0 || len(stale) > 0 {
			t.Errorf("crash %d: processes of the earlier run still run: %v %v", i, left, stale)
		}
		if len(servers) != 1 {
			t.Errorf("crash %d: %d servers run, want 1: %v", i, len(servers), servers)
		}
		if p.c.reaper && !old.gotTerm(oldLog, "listener") {
			t.Errorf("crash %d: the earlier run's listener (pid %d) got no SIGTERM from reaper\n%s", i, old.ns["listening"], oldLog)
		}
	}
}

// noted tells whether a line of a container's log says text.
func noted(log, text string) bool {
	return regexp.MustCompile(`(?m)^\S+ \S+ F ` + regexp.QuoteMeta(text) + `$`).MatchString(log)
}

// stale lists the processes of the pod's image outside the current run of
// its web container, and of its sidecar.
func (p *kubePod) stale() []string {
	var out []string
	for _, proc := range markedProcesses(p.marker) {
		pid, _ := strconv.Atoi(strings.Fields(proc)[0])
		if !sameNamespace(pid, p.web.init) {
			out = append(out, proc)
		}
	}
	return out
}

// servers lists the pod's servers (example-web --port).
func (p *kubePod) servers() []string {
	var out []string
	for _, proc := range markedProcesses(p.marker) {
		if strings.Contains(proc, " /bin/sh /usr/local/bin/example-web --port") {
			out = append(out, proc)
		}
	}
	return out
}

// deletion is how a pod's deletion went.
type deletion struct {
	began           time.Time // the manifest's removal
	initAt, pauseAt time.Time // the exits of the web container's init and of the pause process
	sideAt          time.Time // the sidecar's exit, in the shared-PID pod
	hook, term      time.Time // the server's "drain" and "term" lines, as the CRI timed them
	code            int       // the web container's exit status
	log             string    // its log
}

// delete deletes the pod as its owner does (the manifest removed), and
// waits until its sandbox is gone.
func (p *kubePod) delete(t testing.TB) *deletion {
	t.Helper()
	initExit := watchExit(p.web.fds["init"], p.period+itest.Deadline)
	pauseExit := watchExit(itest.PidfdsUntil(t, p.owner, []int{p.pause})[0], p.period+2*itest.Deadline)
	var sideExit <-chan time.Time
	if p.side != nil {
		sideExit = watchExit(p.side.fds["init"], p.period+itest.Deadline)
	}
	d := &deletion{began: time.Now()}
	if err := os.Remove(p.file); err != nil {
		t.Fatal(err)
	}
	d.initAt, d.pauseAt = <-initExit, <-pauseExit
	if d.initAt.IsZero() || d.pauseAt.IsZero() {
		t.Fatalf("the init (host pid %d) or the pause process (host pid %d) still runs %v after the manifest's removal",
			p.web.init, p.pause, p.period+itest.Deadline)
	}
	if p.side != nil {
		d.sideAt = <-sideExit
	}
	d.code = p.b.exitOf(t, p.web.id)
	d.log = p.web.log.String()
	d.hook, d.term = lineTime(d.log, "drain"), lineTime(d.log, "term")
	return d
}

// since is how long after the manifest's removal at came, rounded.
func (d *deletion) since(at time.Time) time.Duration {
	return at.Sub(d.began).Round(time.Millisecond)
}

// checkDeletion deletes the pod and checks what the kubelet and the init
// did: the preStop hook before the SIGTERM, the init's exit within the
// grace period with the server's status, nothing left; under reaper every
// process of the container stopped by SIGTERM first; in a shared PID
// namespace, the sidecar untouched by the init.
func checkDeletion(t testing.TB, p *kubePod) {
	d := p.delete(t)
	left := markedProcesses(p.marker)
	worker, listener := p.web.gotTerm(d.log, "worker"), p.web.gotTerm(d.log, "listener")
	t.Logf("measured: %s: the manifest removed; the server drained %v later (the preStop hook), got SIGTERM %v later, "+
		"the init exited %v later with %d, the pod's sandbox %v later; SIGTERM noted by the worker %v, by the listener %v",
		p.c.name, d.since(d.hook), d.since(d.term), d.since(d.initAt), d.code, d.since(d.pauseAt), worker, listener)
	if d.hook.IsZero() || d.term.IsZero() || !d.hook.Before(d.term) {
		t.Errorf("want the preStop hook's drain before the SIGTERM\n%s", d.log)
	}
	if d.code != 0 {
		t.Errorf("the container's exit code: %d, want the server's 0 (137: SIGKILLed at the end of the grace period)\n%s", d.code, d.log)
	}
	if len(left) > 0 {
		t.Errorf("processes of the pod left after its deletion: %v", left)
	}
	if p.side != nil {
		checkSidecar(t, p, d.initAt, d.sideAt)
	}
	if !p.c.reaper {
		if worker || listener {
			t.Errorf("under tini the worker or the listener got SIGTERM: the baseline has changed, and so must docs/deployment.md\n%s", d.log)
		}
		return
	}
	if !worker || !listener {
		t.Errorf("want SIGTERM noted by the worker (pid %d) and the listener (pid %d)\n%s", p.web.ns["worker"], p.web.ns["listening"], d.log)
	}
}

// watchExit sends the time the process of a pidfd exits, or a zero time
// when it has not within.
func watchExit(fd int, within time.Duration) <-chan time.Time {
	at := make(chan time.Time, 1)
	go func() {
		if itest.AllExit([]int{fd}, within) {
			at <- time.Now()
			return
		}
		at <- time.Time{}
	}()
	return at
}

// checkSidecar checks that the sidecar was not touched by the web
// container's init: its shipper's one SIGTERM came from the sidecar, once
// the web container's init (which exited at initAt) and server were gone
// (an init that swept the shipper would have signalled it while it still
// ran), and the sidecar exited (at sideAt) with 0. The two exit times are
// only reported: each is when a goroutine watching a pidfd woke, and the
// sidecar can end within a millisecond of the init (a loaded run saw it
// 0.8 ms "before"), so their order says nothing.
func checkSidecar(t testing.TB, p *kubePod, initAt, sideAt time.Time) {
	t.Helper()
	log := p.side.log.String()
	code := p.b.exitOf(t, p.side.id)
	terms := len(regexp.MustCompile(`(?m)^\S+ \S+ F shipper-term$`).FindAllString(log, -1))
	order := regexp.MustCompile(`(?m)^\S+ \S+ F web-gone\n(?:.*\n)*\S+ \S+ F shipper-term$`).MatchString(log)
	t.Logf("measured: %s: sidecar: exited %v after the web container's init, with %d; its shipper got %d SIGTERM, after the web server was gone: %v",
		p.c.name, sideAt.Sub(initAt).Round(time.Millisecond), code, terms, order)
	if sideAt.IsZero() {
		t.Errorf("the sidecar did not exit (waited %v)", p.period+itest.Deadline)
	}
	if terms != 1 || !order {
		t.Errorf("want one SIGTERM for the shipper, from the sidecar, after the web server was gone\n%s", log)
	}
	if code != 0 {
		t.Errorf("the sidecar's exit code: %d, want 0\n%s", code, log)
	}
}

// lineTime is the time the CRI wrote the first line of a container's log
// saying text, or zero.
func lineTime(log, text string) time.Time {
	m := regexp.MustCompile(`(?m)^(\S+) \S+ F ` + regexp.QuoteMeta(text) + `$`).FindStringSubmatch(log)
	if m == nil {
		return time.Time{}
	}
	at, _ := time.Parse(time.RFC3339Nano, m[1])
	return at
}

// markedProcesses lists the processes on the host whose environment holds
// REAPER_TEST_PAYLOAD=marker, each as "PID COMMAND LINE".
func markedProcesses(marker string) []string {
	var found []string
	for _, pid := range itest.AllPIDs() {
		env, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		for _, kv := range strings.Split(string(env), "\x00") {
			if kv == "REAPER_TEST_PAYLOAD="+marker {
				cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
				found = append(found, fmt.Sprintf("%d %s", pid, strings.ReplaceAll(strings.TrimSpace(string(cmdline)), "\x00", " ")))
			}
		}
	}
	return found
}

// BenchmarkKubePodDeletion measures the deletion of each example pod under
// reaper and under tini on the test bed (see kubebed_test.go), from the
// manifest's removal: the preStop hook's drain, the server's SIGTERM, the
// container's init exit and the pod's sandbox gone. Each pod runs and is
// deleted REAPER_BENCH_PODS times (default 3), one at a time:
//
//	go test -run '^$' -bench KubePodDeletion -benchtime 1x ./integration/
func BenchmarkKubePodDeletion(b *testing.B) {
	bed := newKubeBed(b)
	runs := itest.EnvInt("REAPER_BENCH_PODS", 3)
	var rows [][]string
	for _, c := range kubeCases {
		var ds []*deletion
		for r := 0; r < runs; r++ {
			p := startKubeCase(b, bed, c, fmt.Sprintf("-%d", r))
			ds = append(ds, p.delete(b))
		}
		rows = append(rows, deletionRow(c, ds))
	}
	itest.Table(fmt.Sprintf("Pod deletion (%d deletions each; median, then the slowest): from the manifest's removal", runs),
		[]string{"pod", "preStop hook's drain", "SIGTERM", "the init's exit", "the sandbox gone", "exit codes"}, rows)
}

// deletionRow is a row of BenchmarkKubePodDeletion's table.
func deletionRow(c kubeCase, ds []*deletion) []string {
	row := []string{c.name}
	for _, at := range []func(d *deletion) time.Time{
		func(d *deletion) time.Time { return d.hook }, func(d *deletion) time.Time { return d.term },
		func(d *deletion) time.Time { return d.initAt }, func(d *deletion) time.Time { return d.pauseAt },
	} {
		var took []time.Duration
		for _, d := range ds {
			took = append(took, d.since(at(d)))
		}
		slices.Sort(took)
		row = append(row, fmt.Sprintf("%.2f s (%.2f s)", itest.Percentile(took, 50).Seconds(), took[len(took)-1].Seconds()))
	}
	codes := map[int]bool{}
	for _, d := range ds {
		codes[d.code] = true
	}
	return append(row, fmt.Sprint(slices.Sorted(maps.Keys(codes))))
}
