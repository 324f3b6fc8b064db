package integration

// Deployments without an engine: reaper as tini (-p), the shipped examples'
// timeouts, and reaper around a CI job. The image and podman's --init are in
// engines/podman_test.go, the systemd service in systemd/unitrestart_test.go.

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/reaper-init/reaper/integration/itest"
	"github.com/reaper-init/reaper/reaper"
)

func TestTiniParentDeathSignal(t *testing.T) {
	// tini -p SIGTERM: reaper gets SIGTERM when its parent dies, and stops
	// what runs below it.
	link := filepath.Join(t.TempDir(), "tini")
	if err := os.Symlink(itest.Bin().Reaper, link); err != nil {
		t.Fatal(err)
	}
	events := itest.NewFIFO(t, "events")
	parent := exec.Command("sh", "-c", `"$TINI" -p SIGTERM -- sh -c 'echo "up $$" > "$F"; exec sleep 300' &
echo "reaper $!" > "$F"
read x`)
	parent.Env = append(os.Environ(), "TINI="+link, "F="+events.Path)
	stdin, err := parent.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	pids := map[string]int{}
	for len(pids) < 2 {
		kind, pid, _ := strings.Cut(events.Next(t), " ")
		pids[kind], _ = strconv.Atoi(pid)
	}
	fds := itest.Pidfds(t, []int{pids["reaper"], pids["up"]})
	t.Cleanup(func() {
		for _, fd := range fds {
			unix.PidfdSendSignal(fd, syscall.SIGKILL, nil, 0)
		}
	})
	stdin.Close() // the parent exits
	parent.Wait()
	if !itest.AllExit(fds, 10*time.Second) {
		t.Errorf("reaper (%d) or its child (%d) still runs after reaper's parent died", pids["reaper"], pids["up"])
	}
}

func TestExamplesKeepTheirTimeouts(t *testing.T) {
	read := func(name string) string { return string(itest.MustRead(t, filepath.Join(itest.RepoRoot(t), name))) }
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
		strings.TrimPrefix(itest.PreemptOff, "-ldflags=")} {
		if !strings.Contains(docker, want) {
			t.Errorf("Dockerfile: no %s", want)
		}
	}
}

func TestCIJobLeakingAServer(t *testing.T) {
	// As in examples/github-actions.yml: reaper --timeout=... --report=... --
	// JOB. The job starts a server in the background and fails with 3.
	addr := itest.FreeAddr(t)
	p := itest.Plant(t, false, itest.Tree{Flags: []string{"--timeout=10m"}, Ups: 1, Exit: 3, Leave: true,
		Body: fmt.Sprintf(`"$HELPER" listen %s "$F" &`, addr)})
	p.Release(t)
	r := p.Wait()
	if l, err := net.Listen("tcp", addr); err != nil {
		t.Errorf("the server's port %s is still taken after the job: %v", addr, err)
	} else {
		l.Close()
	}
	p.ExpectClean(t, r, 3)
	if rep := p.ReadReport(t); rep.ExitCode != 3 || rep.Command == nil || rep.Teardown == nil {
		t.Errorf("report: %+v, want exit_code 3 and the teardown", rep)
	}

	// A job that hangs: --timeout stops it, and everything it started.
	t.Run("timeout", func(t *testing.T) {
		addr := itest.FreeAddr(t)
		p := itest.Plant(t, false, itest.Tree{Flags: []string{"--timeout=1s"}, Ups: 1,
			Body: fmt.Sprintf(`"$HELPER" listen %s "$F" &`, addr)})
		r := p.Wait()
		p.ExpectClean(t, r, reaper.ExitTimeout)
		if rep := p.ReadReport(t); !rep.TimedOut {
			t.Errorf("report: timed_out false")
		}
	})
}
