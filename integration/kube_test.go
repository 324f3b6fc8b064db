package integration

// Kubernetes pods, played by podman (`podman kube play`: a pod infra
// container, shareProcessNamespace, command/args) from the manifests in
// examples/, and deleted as a kubelet deletes a pod.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// exampleWeb is the examples' server, /usr/local/bin/example-web in the
// test's image: with --drain (the preStop hook) it says so and exits.
// Otherwise it starts a worker in the background, which notes the SIGTERM
// it gets, and a process in a session of its own that ignores SIGTERM;
// each announces itself on stdout, the container's log. It exits 0 on
// SIGTERM.
const exampleWeb = `#!/bin/sh
case "$1" in --drain) echo drain; exit 0;; esac
trap 'exit 0' TERM
setsid sh -c 'trap "" TERM; echo "ignorer $$"; exec sleep 3001' </dev/null &
sh -c 'trap "echo worker-term; exit 0" TERM; echo "worker $$"; sleep 3002 & wait' </dev/null &
echo "ready $$"
wait
`

// kubePod is one pod of TestKubePods.
type kubePod struct {
	name     string // the subtest's
	manifest string // the manifest, as played
	reaper   bool   // false for the baseline, which is measured, not judged
	shared   bool   // shareProcessNamespace: true
}

func TestKubePods(t *testing.T) {
	t.Parallel() // see TestDocker
	e := newPodman(t)
	read := func(name string) string { return string(mustRead(t, filepath.Join(repoRoot(t), "examples", name))) }
	example, shared := read("kubernetes-pod.yaml"), read("kubernetes-pod-shared-pid.yaml")
	// The baseline: the shared-PID pod under tini as a subreaper.
	baseline := replaceOnce(t, shared, `command: ["/reaper", "--grace=10s", "--"]`, `command: ["/tini", "-s", "--"]`)
	baseline = replaceOnce(t, baseline, "name: example-web-shared-pid\n", "name: example-web-tini\n")
	pods := []kubePod{
		{name: "example", manifest: example, reaper: true},
		{name: "shared-pid", manifest: shared, reaper: true, shared: true},
		{name: "tini", manifest: baseline, shared: true},
	}
	const tini = "/usr/bin/tini-static"
	var play sync.Mutex // the first play builds the pause image
	for _, p := range pods {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			if _, err := os.Stat(tini); err != nil && !p.reaper {
				skip(t, "no static tini for the baseline (apt-get install tini): %v", err)
			}
			runKubePod(t, e, p, tini, &play)
		})
	}
}

// replaceOnce replaces the one occurrence of old in s.
func replaceOnce(t *testing.T, s, old, new string) string {
	t.Helper()
	if n := strings.Count(s, old); n != 1 {
		t.Fatalf("%d occurrences of %q in the manifest, want 1", n, old)
	}
	return strings.Replace(s, old, new, 1)
}

// manifestMatch returns the first submatch of pattern in a manifest.
func manifestMatch(t *testing.T, manifest, pattern string) string {
	t.Helper()
	m := regexp.MustCompile(pattern).FindStringSubmatch(manifest)
	if m == nil {
		t.Fatalf("the manifest has nothing matching %s", pattern)
	}
	return m[1]
}

// runKubePod plays p with its image made a local one, deletes it as a
// kubelet does, and checks what happened.
func runKubePod(t *testing.T, e *podman, p kubePod, tini string, play *sync.Mutex) {
	marker := fmt.Sprintf("kube-%d-%s", os.Getpid(), p.name)
	image := "localhost/example-web-" + p.name + ":1.0"
	importExampleWeb(t, e, image, marker, tini)
	pp := playPod(t, e, regexp.MustCompile(`(?m)^(\s+image: )\S+$`).ReplaceAllString(p.manifest, "${1}"+image), p.shared, play)
	d := pp.deleteAsKubelet(t, e)
	leftovers := markedProcesses(marker)
	t.Logf("measured: %s: preStop %q %v, %s exited %v after podman stop began (exit code %s), kube down %v: %v in all; "+
		"the worker got SIGTERM: %v; still running when %s exited: %v; left after the pod: %v",
		p.name, d.hook, d.hookTook.Round(time.Millisecond), pp.procs.initName, d.stopTook.Round(time.Millisecond), d.code,
		d.downTook.Round(time.Millisecond), d.total.Round(time.Millisecond), d.workerTermed(), pp.procs.initName, d.outlived, leftovers)
	if d.hook != "drain" {
		t.Errorf("the preStop hook said %q, want drain", d.hook)
	}
	if len(leftovers) > 0 {
		t.Errorf("processes of the pod left on the host after its deletion: %v", leftovers)
	}
	if !p.reaper {
		if d.workerTermed() {
			t.Errorf("under %s the worker got SIGTERM: the baseline has changed, and so must docs/deployment.md", pp.procs.initName)
		}
		return
	}
	checkReaperDeletion(t, pp, d)
}

// checkReaperDeletion checks the deletion of a pod whose container runs
// reaper: within the grace period, the process ignoring SIGTERM given
// reaper's --grace and then killed by reaper, every process of COMMAND
// gone before reaper, COMMAND's status the container's.
func checkReaperDeletion(t *testing.T, pp *playedPod, d *deletion) {
	t.Helper()
	period := time.Duration(pp.period) * time.Second
	grace := manifestGrace(t, pp.manifest)
	if d.code != "0" {
		t.Errorf("the container's exit code: %s, want COMMAND's 0 (137: SIGKILLed by the runtime)\n%s", d.code, d.log)
	}
	if d.hookTook+d.stopTook >= period {
		t.Errorf("preStop and stop took %v, not within terminationGracePeriodSeconds (%v)\n%s", d.hookTook+d.stopTook, period, d.log)
	}
	if d.stopTook < grace-time.Second {
		t.Errorf("reaper exited %v after the stop began: the process ignoring SIGTERM did not get its --grace=%v\n%s",
			d.stopTook, grace, d.log)
	}
	if len(d.outlived) > 0 {
		t.Errorf("still running when reaper exited: %v\n%s", d.outlived, d.log)
	}
	summary := regexp.MustCompile(`teardown: 4 descendants, 3 exited after SIGTERM, 1 killed`)
	killed := fmt.Sprintf("killed pid=%d command=\"sleep 3001\"", pp.ns["ignorer"])
	if !d.workerTermed() || !summary.MatchString(d.log) || !strings.Contains(d.log, killed) {
		t.Errorf("reaper's log: want the worker's SIGTERM, the ignorer (pid %d) killed, and a teardown of 4 descendants, 1 killed:\n%s",
			pp.ns["ignorer"], d.log)
	}
}

// playedPod is a pod podman kube play started, its payload up.
type playedPod struct {
	manifest string
	file     string         // the manifest, as played
	pod, ctr string         // the pod's name, and its container's
	period   int            // terminationGracePeriodSeconds
	preStop  []string       // the container's preStop hook
	log      *lines         // the container's output
	ns       map[string]int // the payload's processes, as the container sees them
	procs    *kubeProcs
}

// playPod plays manifest and waits until its payload is up. play
// serialises `podman kube play`: the first builds podman's pause image.
func playPod(t *testing.T, e *podman, manifest string, shared bool, play *sync.Mutex) *playedPod {
	t.Helper()
	pp := &playedPod{manifest: manifest, file: filepath.Join(t.TempDir(), "pod.yaml"), ns: map[string]int{}}
	if err := os.WriteFile(pp.file, []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	pp.pod = manifestMatch(t, manifest, `(?m)^metadata:\n  name: (\S+)$`)
	pp.ctr = pp.pod + "-" + manifestMatch(t, manifest, `(?m)^    - name: (\S+)$`)
	pp.period, _ = strconv.Atoi(manifestMatch(t, manifest, `terminationGracePeriodSeconds: (\d+)`))
	if err := json.Unmarshal([]byte(manifestMatch(t, manifest, `(?s)preStop:\s*exec:\s*command: (\[[^\]]*\])`)), &pp.preStop); err != nil {
		t.Fatalf("the preStop hook's command: %v", err)
	}
	play.Lock()
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	out, err := e.run(ctx, "kube", "play", "--network=none", pp.file)
	cancel()
	play.Unlock()
	if err != nil {
		t.Fatalf("podman kube play: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		e.run(ctx, "pod", "rm", "--force", "--time=0", pp.pod)
	})
	pp.log = followLogs(t, e, pp.ctr)
	for _, kind := range []string{"ready", "worker", "ignorer"} {
		for _, line := range pp.log.waitFor(t, regexp.MustCompile("^"+kind+" [0-9]+$")) {
			if k, pid, _ := strings.Cut(line, " "); k == kind {
				pp.ns[kind], _ = strconv.Atoi(pid)
			}
		}
	}
	t.Logf("podman kube play: %s up in %v", pp.pod, time.Since(began).Round(time.Millisecond))
	pp.procs = kubeProcesses(t, e, pp.ctr, shared, pp.ns)
	return pp
}

// deletion is how deleting a pod went.
type deletion struct {
	hook     string // what the preStop hook said
	hookTook time.Duration
	// stopTook is from the stop's start to the init's exit, seen on its
	// pidfd. (podman 4.3 sees it by polling kill(pid, 0) every 100 ms:
	// late, when the pid is reused at once.)
	stopTook        time.Duration
	downTook, total time.Duration
	code            string   // the container's exit code
	outlived        []string // processes still running when the container's init exited
	log             string   // the container's output
}

// workerTermed tells whether the worker noted a SIGTERM.
func (d *deletion) workerTermed() bool {
	return regexp.MustCompile(`(?m)^worker-term$`).MatchString(d.log)
}

// deleteAsKubelet deletes the pod as a kubelet does: the preStop hook,
// then the container's stop signal to its PID 1 and, when the grace period
// (what the hook left of it) is over, SIGKILL; then the pod's sandbox,
// its pause process. (podman 4.3's own `kube down` SIGKILLs the pod at
// once, and its `pod stop` stops the infra container along with the
// others.)
func (pp *playedPod) deleteAsKubelet(t *testing.T, e *podman) *deletion {
	t.Helper()
	d := &deletion{}
	type exit struct {
		at       time.Time
		outlived []string
	}
	exited := make(chan exit, 1)
	go func() {
		allExit(pp.procs.fds[:1], time.Duration(pp.period)*time.Second+deadline)
		exited <- exit{time.Now(), pp.procs.running()}
	}()
	began := time.Now()
	d.hook = strings.TrimSpace(e.output(t, append([]string{"exec", pp.ctr}, pp.preStop...)...))
	d.hookTook = time.Since(began)
	left := time.Duration(pp.period)*time.Second - d.hookTook
	stopBegan := time.Now()
	e.mustRun(t, "stop", fmt.Sprintf("--time=%d", int((left+time.Second-1)/time.Second)), pp.ctr)
	x := <-exited
	d.stopTook, d.outlived = x.at.Sub(stopBegan), x.outlived
	d.code = strings.TrimSpace(e.output(t, "inspect", "--format={{.State.ExitCode}}", pp.ctr))
	downBegan := time.Now()
	e.mustRun(t, "kube", "down", pp.file)
	d.downTook = time.Since(downBegan)
	d.total = time.Since(began)
	select {
	case <-pp.log.closed:
	case <-time.After(deadline):
		t.Errorf("podman logs --follow %s did not end with the container", pp.ctr)
	}
	d.log = pp.log.String()
	return d
}

// manifestGrace is reaper's --grace in a manifest's command.
func manifestGrace(t *testing.T, manifest string) time.Duration {
	t.Helper()
	grace, err := time.ParseDuration(manifestMatch(t, manifest, `"--grace=(\S+)"`))
	if err != nil {
		t.Fatalf("--grace: %v", err)
	}
	return grace
}

// importExampleWeb imports the test's image for the examples: busybox,
// reaper at /reaper, tini at /tini, exampleWeb at /usr/local/bin/example-web
// and reaper as ENTRYPOINT, as in the image the examples describe. Every
// process started from it carries REAPER_TEST_PAYLOAD=marker.
func importExampleWeb(t *testing.T, e *podman, name, marker, tini string) {
	t.Helper()
	root := busyboxRoot(t)
	for dst, src := range map[string]string{"reaper": bin().reaper, "tini": tini} {
		if _, err := os.Stat(src); err != nil && dst == "tini" {
			continue // no baseline
		}
		if err := copyFile(src, filepath.Join(root, dst)); err != nil {
			t.Fatal(err)
		}
		os.Chmod(filepath.Join(root, dst), 0o755)
	}
	web := filepath.Join(root, "usr/local/bin/example-web")
	if err := os.MkdirAll(filepath.Dir(web), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(web, []byte(exampleWeb), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	pipeInto(t, tarCommand(ctx, root), e.command(ctx, importArgs(name,
		[]string{"ENV REAPER_TEST_PAYLOAD=" + marker, `ENTRYPOINT ["/reaper", "--"]`})...))
}

// output runs podman with a deadline and returns its standard output,
// failing the test on an error.
func (e *podman) output(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := e.command(ctx, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("podman %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// followLogs follows a container's output (`podman logs --follow`) until
// the container exits.
func followLogs(t *testing.T, e *podman, ctr string) *lines {
	t.Helper()
	log := newLines()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	cmd := e.command(ctx, "logs", "--follow", ctr)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	go log.readFrom(pr)
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
		pr.Close()
	})
	return log
}

// kubeProcs are the processes of a pod's container, as the host sees them:
// its init (reaper, or tini), COMMAND, the worker and the ignorer.
type kubeProcs struct {
	initName string
	names    []string
	pids     []int
	fds      []int // pidfds, in the same order
}

// kubeProcesses finds the processes of ctr, whose payload announced ns,
// and checks that its init is PID 1 of the container, or, in a shared PID
// namespace, that the pod's pause process is.
func kubeProcesses(t *testing.T, e *podman, ctr string, shared bool, ns map[string]int) *kubeProcs {
	t.Helper()
	init, err := strconv.Atoi(strings.TrimSpace(e.mustRun(t, "inspect", "--format={{.State.Pid}}", ctr)))
	if err != nil || init == 0 {
		t.Fatalf("podman inspect %s: no pid (%v)", ctr, err)
	}
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", init))
	argv0, _, _ := strings.Cut(string(cmdline), "\x00")
	k := &kubeProcs{initName: filepath.Base(argv0), names: []string{filepath.Base(argv0), "COMMAND", "worker", "ignorer"}, pids: []int{init}}
	inner, _ := innermostPID(init)
	switch {
	case !shared && inner != 1:
		t.Fatalf("%s (host pid %d) is pid %d of its container, want 1", k.initName, init, inner)
	case shared && inner == 1:
		t.Fatalf("%s (host pid %d) is PID 1 of a shared PID namespace, want the pause process", k.initName, init)
	case shared:
		pause := 0
		for _, p := range namespaceProcs(init) {
			if n, _ := innermostPID(p.pid); n == 1 {
				pause = p.pid
			}
		}
		if data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pause)); !strings.Contains(string(data), "catatonit") {
			t.Fatalf("PID 1 of the pod (host pid %d) runs %q, want the pause process (catatonit)", pause, data)
		}
	}
	for _, kind := range []string{"ready", "worker", "ignorer"} {
		pid := hostPID(init, ns[kind])
		if pid == 0 {
			t.Fatalf("no descendant of %s (host pid %d) is the payload's %s, pid %d", k.initName, init, kind, ns[kind])
		}
		k.pids = append(k.pids, pid)
	}
	k.fds = pidfds(t, k.pids)
	return k
}

// running names the processes after the init that still run.
func (k *kubeProcs) running() []string {
	var names []string
	for _, pid := range running(k.fds[1:], k.pids[1:]) {
		for i, p := range k.pids {
			if p == pid {
				names = append(names, k.names[i])
			}
		}
	}
	return names
}

// markedProcesses lists the processes on the host whose environment holds
// REAPER_TEST_PAYLOAD=marker.
func markedProcesses(marker string) []string {
	var found []string
	for _, pid := range allPIDs() {
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
