package integration

// reaper as a CI job's wrapper: the GitHub runner's cancel, modelled.

import (
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/reaper-init/reaper/signals"
)

// TestGitHubCancelSequence models how the GitHub runner cancels a step:
// SIGINT, 7.5 s later SIGTERM, 2.5 s later SIGKILL of what still runs. In
// GitHub Actions (GITHUB_ACTIONS=true) SIGINT is a stop request: the
// step's processes get a graceful stop (COMMAND's group the SIGINT, the
// others SIGTERM, a TERM-ignorer SIGKILL at the default deadline), and
// reaper ends on its own before the runner's SIGKILL would come, whichever
// of the two signals comes first.
func TestGitHubCancelSequence(t *testing.T) {
	for _, order := range [][2]syscall.Signal{{syscall.SIGINT, syscall.SIGTERM}, {syscall.SIGTERM, syscall.SIGINT}} {
		t.Run(signals.Name(order[0])+"-first", func(t *testing.T) {
			t.Parallel()
			p := plant(t, false, tree{ups: 3, env: []string{"GITHUB_ACTIONS=true"}, body: `sh -c "$LEAF" &
setsid sh -c "$LEAF" &
setsid sh -c "$STUBBORN" &`})
			p.signal(order[0])
			ended := make(chan *result, 1)
			go func() { ended <- p.wait() }()
			var r *result
			select {
			case r = <-ended:
			case <-time.After(7500 * time.Millisecond):
				p.signal(order[1]) // the runner's second signal: a second stop request, SIGKILL now
				select {
				case r = <-ended:
				case <-time.After(2500 * time.Millisecond):
					p.signal(syscall.SIGKILL) // the runner's kill: reaper did not end in time
					r = <-ended
				}
			}
			p.expectClean(t, r, 128+int(order[0]))
			if !regexp.MustCompile(`info: stopping: COMMAND first reason=signal`).MatchString(r.Stderr) {
				t.Errorf("%s did not begin a stop:\n%s", signals.Name(order[0]), r.Stderr)
			}
			if rep := p.readReport(t); rep.Teardown == nil || rep.Teardown.Received != signals.Name(order[0]) || rep.Teardown.Killed != 1 {
				t.Errorf("report: %+v, want a stop begun by %s that killed the TERM-ignorer alone", rep.Teardown, signals.Name(order[0]))
			}
		})
	}
}
