package services

// reaper as the shell of GitHub Actions steps, run by act
// (github.com/nektos/act) on this host (-P ubuntu-latest=-self-hosted):
// the workflows of testdata/act, each in a git checkout of its own (act
// wants one), act and all it starts in a cgroup of the test's. Offline:
// run: steps only (no action is downloaded, no image pulled), no cache
// server, no version check, no token asked of gh (see docs/ci.md).

import (
	"bufio"
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

	"github.com/reaper-init/reaper/integration/itest"
)

// actVersion is the act these tests are written against (.ci/run
// installs it): its log lines are what they read.
const actVersion = "0.2.89"

// withReaper is the shell line of the workflows' steps.
const withReaper = "shell: reaper -- bash --noprofile --norc -eo pipefail {0}"

// actBinary returns act's path, or skips the test.
func actBinary(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("act")
	if err != nil {
		path = filepath.Join(itest.GoEnv(t, "GOPATH"), "bin", "act")
	}
	out, err := exec.Command(path, "--version").Output()
	if err != nil {
		itest.Skip(t, "no act (go install github.com/nektos/act@v%s): %v", actVersion, err)
	}
	if got := strings.TrimSpace(string(out)); got != "act version "+actVersion {
		itest.Skip(t, "%s says %q: these tests read the log of act %s (go install github.com/nektos/act@v%s)", path, got, actVersion, actVersion)
	}
	return path
}

// actJob is one run of act.
type actJob struct {
	cmd    *exec.Cmd
	out    *itest.Lines  // act's stdout and stderr: its log and the steps' output
	events chan string   // the lines the step's processes announce on $F
	gate   *itest.FIFO   // the step waits for a line here ($G)
	cg     *itest.Cgroup // act and everything it starts
	done   chan struct{} // closed once act has exited and its output is read
}

// startAct runs act on workflow, a file of testdata/act whose steps' shell
// line is replaced by shell (when not ""), with reaper on PATH and vars
// ("NAME=VALUE") in the steps' environment besides F and G.
func startAct(t *testing.T, workflow, shell string, vars ...string) *actJob {
	t.Helper()
	act := actBinary(t)
	dir := t.TempDir()
	j := &actJob{events: make(chan string, 16), gate: itest.NewFIFO(t, "gate"), done: make(chan struct{})}
	j.cg = itest.SharedCgroup(t, 256)

	// The checkout: the workflow alone, committed.
	repo, home := filepath.Join(dir, "repo"), filepath.Join(dir, "home")
	text := string(itest.MustRead(t, filepath.Join("testdata", "act", workflow)))
	if shell != "" {
		text = strings.ReplaceAll(text, withReaper, shell)
	}
	if err := os.MkdirAll(filepath.Join(repo, ".github", "workflows"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(repo, ".github", "workflows", workflow), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	// HOME and XDG_*: act reads its .actrc there, and writes its caches
	// and the steps' working directories; none of the user's.
	env := []string{"HOME=" + home, "XDG_CONFIG_HOME=" + home + "/.config", "XDG_CACHE_HOME=" + home + "/.cache",
		"PATH=" + dir + "/bin:" + os.Getenv("PATH"), "ACT_DISABLE_VERSION_CHECK=1", "GIT_CONFIG_NOSYSTEM=1"}
	for _, argv := range [][]string{{"init", "-q"}, {"add", "."},
		{"-c", "user.name=reaper-test", "-c", "user.email=reaper-test@example.invalid", "commit", "-qm", "workflow"}} {
		git := exec.Command("git", argv...)
		git.Dir, git.Env = repo, env
		if out, err := git.CombinedOutput(); err != nil {
			itest.Skip(t, "git %v: %v (apt-get install git)\n%s", argv, err, out)
		}
	}
	if err := os.MkdirAll(dir+"/bin", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(itest.Bin().Reaper, dir+"/bin/reaper"); err != nil {
		t.Fatal(err)
	}

	events := itest.NewFIFO(t, "events")
	args := []string{act, "workflow_dispatch", "-W", ".github/workflows/" + workflow,
		"-P", "ubuntu-latest=-self-hosted", // steps run on this host: no image
		"--no-cache-server",   // no cache server started
		"-s", "GITHUB_TOKEN=", // a token of its own: act does not run gh auth token
		"--env", "F=" + events.Path, "--env", "G=" + j.gate.Path}
	for _, v := range vars {
		args = append(args, "--env", v)
	}
	argv := itest.JoinArgv(args...)
	j.cmd = exec.Command(argv[0], argv[1:]...)
	j.cmd.Dir, j.cmd.Env = repo, append(env, j.cg.JoinEnv()...)
	d := itest.StartDaemon(t, "act", j.cmd)
	j.out = d.Log
	go func() {
		<-d.Ended
		<-j.out.Closed // only act holds the pipe: the steps have a terminal of act's
		close(j.done)
	}()
	go func() { // until the FIFO is closed, when the test ends
		in := bufio.NewReader(events.File)
		for {
			line, err := in.ReadString('\n')
			if err != nil {
				return
			}
			j.events <- strings.TrimSuffix(line, "\n")
		}
	}()
	t.Cleanup(func() {
		select {
		case <-j.done:
		default:
			j.cg.Kill()
			<-j.done
		}
	})
	return j
}

// announced reads n lines "KIND PID" from the step's processes, and
// returns the pids of each kind.
func (j *actJob) announced(t *testing.T, n int) map[string][]int {
	t.Helper()
	got := map[string][]int{}
	timeout := time.After(itest.Deadline)
	for i := 0; i < n; i++ {
		var line string
		select {
		case line = <-j.events:
		case <-timeout:
			t.Fatalf("%d of %d processes announced themselves within %v:\n%s", i, n, itest.Deadline, j.out)
		case <-j.done:
			select {
			case line = <-j.events:
			default:
				t.Fatalf("act ended (%v) before the step's processes announced themselves:\n%s", j.cmd.ProcessState, j.out)
			}
		}
		kind, pid, _ := strings.Cut(line, " ")
		p, err := strconv.Atoi(pid)
		if err != nil {
			t.Fatalf("a step wrote %q", line)
		}
		got[kind] = append(got[kind], p)
	}
	return got
}

// release lets the step's command exit.
func (j *actJob) release(t *testing.T) {
	t.Helper()
	if _, err := j.gate.File.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
}

// wait waits for act's end and returns its status as a shell shows it.
func (j *actJob) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-j.done:
	case <-time.After(itest.Deadline):
		t.Fatalf("act still runs after %v:\n%s", itest.Deadline, j.out)
	}
	ws := j.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// expect fails the test unless act's output holds each of the texts.
func (j *actJob) expect(t *testing.T, texts ...string) {
	t.Helper()
	out := j.out.String()
	for _, s := range texts {
		if !strings.Contains(out, s) {
			t.Errorf("act's output has no %q:\n%s", s, out)
		}
	}
}

// expectNothingLeft fails the test unless the processes are gone now, and
// the cgroup of act's run empties (nothing the run started, reaper's
// guardian included, is left).
func (j *actJob) expectNothingLeft(t *testing.T, fds, pids []int) {
	t.Helper()
	if alive := itest.Running(fds, pids); len(alive) > 0 {
		t.Errorf("still running after act exited: %v of %v\n%s", alive, pids, j.out)
	}
	if err := itest.WaitEmpty(j.cg.V2); err != nil {
		t.Errorf("the cgroup of act's run: %v", err)
	}
}

// summaryRow matches the row of pid in the table reaper appends to
// $GITHUB_STEP_SUMMARY, which act prints after the step.
func summaryRow(pid int, ending string) *regexp.Regexp {
	return regexp.MustCompile(fmt.Sprintf(`(?m)^\| %d \| .* \| %s \| \S+ \|$`, pid, regexp.QuoteMeta(ending)))
}

// TestActLeakingStep: a step leaves a setsid sleep and a TCP server
// running, and exits 0. When act reports the step, nothing is left and
// the port binds again; the step and the job succeed; the step summary
// names both leftovers; the second step, which leaves nothing, writes no
// summary.
func TestActLeakingStep(t *testing.T) {
	t.Parallel()
	addr := itest.FreeAddr(t)
	j := startAct(t, "leak.yml", "", "HELPER="+itest.Bin().Helper, "ADDR="+addr)
	got := j.announced(t, 3)
	left := append(got["up"], got["listening"]...)
	if len(left) != 2 || len(got["command"]) != 1 {
		t.Fatalf("announced %v, want a command, an up and a listening", got)
	}
	fds := itest.Pidfds(t, left)
	j.release(t)
	if code := j.wait(t); code != 0 {
		t.Errorf("act exited %d, want 0:\n%s", code, j.out)
	}
	j.expect(t, "✅  Success - Main leaking step", "✅  Success - Main clean step", "🏁  Job succeeded")
	j.expectNothingLeft(t, fds, left)
	if l, err := net.Listen("tcp", addr); err != nil {
		t.Errorf("the server's port %s is still taken after the job: %v", addr, err)
	} else {
		l.Close()
	}

	t.Run("summary", func(t *testing.T) {
		// act 0.2.89 gives each step a GITHUB_STEP_SUMMARY of its own, an
		// empty file, and prints what the step wrote there after it.
		out := j.out.String()
		if n := strings.Count(out, "⚙  Summary - "); n != 1 {
			t.Errorf("%d step summaries, want 1 (of the leaking step):\n%s", n, out)
		}
		if !strings.Contains(out, "left 2 processes (when it exited)") || !strings.Contains(out, "| pid | command | how it ended | gone after |") {
			t.Errorf("no table of two processes in the step summary:\n%s", out)
		}
		for _, pid := range left {
			if !summaryRow(pid, "exited after SIGTERM").MatchString(out) {
				t.Errorf("no row for pid %d, exited after SIGTERM, in the step summary:\n%s", pid, out)
			}
		}
	})
}

// runLeaving runs a step that announces its command and one process of
// kind, which it leaves, to its end: it returns that process's pid and
// act's status, once it has checked that nothing is left.
func (j *actJob) runLeaving(t *testing.T, kind string) (pid, code int) {
	t.Helper()
	left := j.announced(t, 2)[kind]
	if len(left) != 1 {
		t.Fatalf("announced %v, want one %s", left, kind)
	}
	fds := itest.Pidfds(t, left)
	j.release(t)
	code = j.wait(t)
	j.expectNothingLeft(t, fds, left)
	return left[0], code
}

// TestActTermIgnoringLeftover: a step leaves a setsid process that
// ignores SIGTERM. reaper SIGKILLs it when its grace period ends (its
// warning is in the step's output), nothing is left, the step succeeds.
func TestActTermIgnoringLeftover(t *testing.T) {
	t.Parallel()
	j := startAct(t, "stubborn.yml", "")
	stubborn, code := j.runLeaving(t, "stubborn")
	if code != 0 {
		t.Errorf("act exited %d, want 0:\n%s", code, j.out)
	}
	j.expect(t, "✅  Success - Main stubborn step", "🏁  Job succeeded",
		fmt.Sprintf("reaper: warning: killed pid=%d ", stubborn))
	if !summaryRow(stubborn, "killed (SIGKILL after the 1s grace period)").MatchString(j.out.String()) {
		t.Errorf("no row for pid %d, killed, in the step summary:\n%s", stubborn, j.out)
	}
}

// TestActLeftoversFail: with --leftovers=fail, a step whose command exits
// 0 but leaves a process fails: reaper exits 123 and names the process.
func TestActLeftoversFail(t *testing.T) {
	t.Parallel()
	j := startAct(t, "leftovers.yml", "")
	up, code := j.runLeaving(t, "up")
	if code == 0 {
		t.Errorf("act exited 0, want a failed job:\n%s", j.out)
	}
	j.expect(t, "❌  Failure - Main leaking step", "exit status 123", "🏁  Job failed",
		fmt.Sprintf("COMMAND exited 0 but left processes that had to be stopped (--leftovers=fail) processes=1 pids=%d", up))
}

// TestActCancelledJob: act cancels a job on SIGINT by SIGKILLing the
// running step's process, which is reaper: its guardian stops what the
// step left (a setsid process ignoring SIGTERM among them) and removes the
// run's cgroup. The same workflow with reaper's guardian off, and with
// bash alone as the step's shell, are the baselines: measured, not
// judged, as long as they leak what the guardian stops.
func TestActCancelledJob(t *testing.T) {
	for _, c := range []struct {
		name, shell string
		guarded     bool
	}{
		{"reaper", "", true},
		{"reaper --guardian=off", "shell: reaper --guardian=off -- bash --noprofile --norc -eo pipefail {0}", false},
		{"bash alone", "shell: bash --noprofile --norc -eo pipefail {0}", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			j := startAct(t, "cancel.yml", c.shell)
			got := j.announced(t, 3)
			pids := append(got["up"], got["stubborn"]...)
			if len(got["up"]) != 1 || len(got["stubborn"]) != 1 {
				t.Fatalf("announced %v, want an up and a stubborn", got)
			}
			fds := itest.Pidfds(t, pids)
			cancelled := time.Now()
			if err := j.cmd.Process.Signal(syscall.SIGINT); err != nil {
				t.Fatal(err)
			}
			if code := j.wait(t); code == 0 {
				t.Errorf("act exited 0 after a cancel:\n%s", j.out)
			}
			// act SIGKILLed the step's process: reaper had no teardown.
			j.expect(t, "this step has been cancelled: signal: killed", "🏁  Job failed")
			if !c.guarded {
				alive := itest.Running(fds, pids)
				t.Logf("baseline, %s: act's cancel left running %v of %v (%v the setsid TERM-ignorer), run cgroups left: %v",
					c.name, alive, pids, got["stubborn"], itest.LeafDirs(j.cg))
				if len(itest.Running(fds[1:], pids[1:])) == 0 {
					t.Errorf("%s: the setsid TERM-ignorer did not survive act's cancel: the baseline has changed, and so must docs/ci.md", c.name)
				}
				return
			}
			itest.AwaitGone(t, fds, pids)
			t.Logf("with reaper: every process of the step gone %v after act's SIGINT", time.Since(cancelled).Round(time.Millisecond))
			if err := itest.WaitEmpty(j.cg.V2); err != nil {
				t.Errorf("the cgroup of act's run: %v", err)
			}
			if dirs := itest.LeafDirs(j.cg); len(dirs) > 0 {
				t.Errorf("the run's cgroup is left: %v", dirs)
			}
		})
	}
}

// TestGitHubExampleUsesTheTestedShellLine: the shell line of
// examples/github-actions.yml and the README is the one the workflows here
// run under act.
func TestGitHubExampleUsesTheTestedShellLine(t *testing.T) {
	for _, name := range []string{"examples/github-actions.yml", "README.md"} {
		if !strings.Contains(string(itest.MustRead(t, filepath.Join(itest.RepoRoot(t), name))), withReaper) {
			t.Errorf("%s has no %q", name, withReaper)
		}
	}
}
