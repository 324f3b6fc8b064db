package integration

// reaper as a CI job's wrapper: the GitHub runner's cancel, modelled.

import (
	"regexp"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/reaper-init/reaper/integration/itest"
)

// runnerCancel cancels p as the GitHub runner cancels a step's process
// (actions/runner, src/Runner.Sdk/ProcessInvoker.cs, CancelAndKillProcessTree
// with killProcessOnCancel false, as ScriptHandler runs a run: step):
// SIGINT to the process alone; if it has not exited 7.5 s later, SIGTERM
// to it alone; if it has not exited 2.5 s after that, SIGKILL to it alone
// (on Linux the runner's "kill the process tree" is Process.Kill() of the
// step's process). It returns how reaper ended and what was sent.
func runnerCancel(p *itest.Planted) (*itest.Result, []syscall.Signal) {
	ended := make(chan *itest.Result, 1)
	go func() { ended <- p.Wait() }()
	var sent []syscall.Signal
	for _, step := range []struct {
		sig  syscall.Signal
		wait time.Duration
	}{{syscall.SIGINT, 7500 * time.Millisecond}, {syscall.SIGTERM, 2500 * time.Millisecond}, {syscall.SIGKILL, itest.Deadline}} {
		p.Signal(step.sig)
		sent = append(sent, step.sig)
		select {
		case r := <-ended:
			return r, sent
		case <-time.After(step.wait):
		}
	}
	return <-ended, sent
}

// TestGitHubCancelSequence: in GitHub Actions (GITHUB_ACTIONS=true) the
// runner's SIGINT is a stop request: COMMAND gets the SIGINT, the
// other processes SIGTERM once COMMAND has exited, a TERM-ignorer SIGKILL,
// and reaper ends before the runner's SIGKILL would come. With the default
// grace (5 s) that is before the runner's SIGTERM; with a longer one (given,
// or a systemd unit's stop timeout: a self-hosted runner's service has
// TimeoutStopSec=5min) the SIGTERM is a second stop request, which
// SIGKILLs what is left at once.
func TestGitHubCancelSequence(t *testing.T) {
	for _, c := range []struct {
		name     string
		flags    []string
		termSent bool // the runner's SIGTERM comes before reaper's end
	}{
		{"default grace", nil, false},
		{"grace beyond the runner's 7.5 s", []string{"--grace=30s"}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			p := itest.Plant(t, false, itest.Tree{Flags: c.flags, Ups: 3, Env: []string{"GITHUB_ACTIONS=true"}, Body: `sh -c "$LEAF" &
setsid sh -c "$LEAF" &
setsid sh -c "$STUBBORN" &`})
			r, sent := runnerCancel(p)
			t.Logf("the runner sent %v", names(sent))
			if slices.Contains(sent, syscall.SIGKILL) {
				t.Errorf("reaper did not end before the runner's SIGKILL")
			}
			if c.termSent && !slices.Contains(sent, syscall.SIGTERM) {
				t.Errorf("reaper ended before the runner's SIGTERM: the 30 s grace was not honoured")
			}
			p.ExpectClean(t, r, 128+int(syscall.SIGINT))
			if !regexp.MustCompile(`info: stopping reason=signal first=COMMAND`).MatchString(r.Stderr) {
				t.Errorf("SIGINT did not begin a stop:\n%s", r.Stderr)
			}
			if rep := p.ReadReport(t); rep.Teardown == nil || rep.Teardown.Received != "SIGINT" || rep.Teardown.Killed != 1 {
				t.Errorf("report: %+v, want a stop begun by SIGINT that killed the TERM-ignorer alone", rep.Teardown)
			} else if c.flags == nil && rep.Teardown.GraceMS != 5000 {
				// What ends the run before the runner's SIGTERM at 7.5 s.
				t.Errorf("report: grace %v ms, want the default 5000", rep.Teardown.GraceMS)
			}
		})
	}
}
