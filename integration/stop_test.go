package integration

// How a stop request stops a service: COMMAND first, in the time its
// manager gives it; its own workers by COMMAND, in its own order; the
// others once COMMAND has exited (see docs/stopping.md).

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/reaper-init/reaper/integration/itest"
	"github.com/reaper-init/reaper/signals"
)

// orderly is a run of testdata/orderly.py under reaper: a service that
// drains for a while on SIGTERM, then stops its worker (in a session of
// its own) and exits 0, and an escapee it does not manage.
type orderly struct {
	*itest.Session
	events  *itest.FIFO
	pids    map[string]int // command, worker, escapee: as the payload sees them
	reaper  int            // reaper's pid as the payload sees it
	senders map[string]int // who sent each its SIGTERM, once the run ended
}

// startOrderly starts the service under reaper with flags, draining for
// drain seconds, and waits until its three processes announced themselves.
func startOrderly(t *testing.T, pid1 bool, drain string, flags ...string) *orderly {
	t.Helper()
	python := itest.RequirePython(t)
	o := &orderly{events: itest.NewFIFO(t, "events"), pids: map[string]int{}, senders: map[string]int{}}
	script, err := filepath.Abs("testdata/orderly.py")
	if err != nil {
		t.Fatal(err)
	}
	args := append(append([]string{"-v"}, flags...), python, script)
	o.Session = itest.Start(t, itest.Opts{PID1: pid1, Args: args, Env: []string{"F=" + o.events.Path, "DRAIN=" + drain}})
	for len(o.pids) < 3 {
		var who string
		var pid int
		if _, err := fmt.Sscanf(o.events.Next(t), "%s %d", &who, &pid); err != nil {
			t.Fatal(err)
		}
		o.pids[who] = pid
	}
	o.reaper = 1
	if !pid1 {
		o.reaper = o.ReaperPID()
	}
	return o
}

// finish waits for reaper and reads who sent each process its SIGTERM.
func (o *orderly) finish(t *testing.T) *itest.Result {
	t.Helper()
	r := o.Wait()
	for _, line := range o.events.Rest() {
		var who string
		var from int
		if _, err := fmt.Sscanf(line, "term %s %d", &who, &from); err == nil {
			o.senders[who] = from
		}
	}
	return r
}

// TestStopRequestReachesCommandFirst: by default a stop request goes to
// COMMAND alone (its group), which stops its worker itself: the worker's
// SIGTERM comes from COMMAND, not from reaper. The escapee COMMAND does not
// manage gets reaper's SIGTERM once COMMAND has exited. With
// --kill-mode=control-group everyone gets reaper's at once.
func TestStopRequestReachesCommandFirst(t *testing.T) {
	for _, mode := range []string{"mixed", "control-group"} {
		t.Run(mode, func(t *testing.T) {
			modes(t, func(t *testing.T, pid1 bool) {
				o := startOrderly(t, pid1, "0.5", "--grace=30s", "--kill-mode="+mode)
				o.Signal(syscall.SIGTERM)
				r := o.finish(t)
				if r.Status() != 0 || r.Leftovers() != "" || strings.Contains(r.Stderr, "warning: killed") {
					t.Errorf("exit %d, left %s; want the service's 0, nothing left, nothing killed\n%s", r.Status(), r.Leftovers(), r.Stderr)
				}
				wantWorker := o.pids["command"]
				if mode == "control-group" {
					wantWorker = o.reaper
				}
				want := map[string]int{"command": o.reaper, "worker": wantWorker, "escapee": o.reaper}
				if fmt.Sprint(o.senders) != fmt.Sprint(want) {
					t.Errorf("SIGTERM senders %v, want %v (command %d, reaper %d)\n%s", o.senders, want, o.pids["command"], o.reaper, r.Stderr)
				}
			})
		})
	}
}

// TestStopGivesCommandTheManagersTime: as PID 1, where the container
// engine's SIGKILL is the deadline, reaper never SIGKILLs COMMAND on a stop
// request of its own accord: a drain longer than the default grace period
// ends with the service's own exit. Elsewhere, with no manager's deadline,
// the default grace period applies, and an explicit --grace always wins.
func TestStopGivesCommandTheManagersTime(t *testing.T) {
	for _, tc := range []struct {
		name   string
		pid1   bool
		flags  []string
		killed bool
	}{
		{"pid1-default", true, nil, false},
		{"child-default", false, nil, true},
		{"pid1-explicit-grace", true, []string{"--grace=1s"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			o := startOrderly(t, tc.pid1, "6.5", tc.flags...) // longer than the default 5 s
			o.Signal(syscall.SIGTERM)
			r := o.finish(t)
			if r.Leftovers() != "" {
				t.Errorf("left %s\n%s", r.Leftovers(), r.Stderr)
			}
			killed := strings.Contains(r.Stderr, "warning: killed")
			if killed != tc.killed || (!tc.killed && r.Status() != 0) || (tc.killed && r.Status() != 128+9) {
				t.Errorf("exit %d, killed %v; want killed %v (exit 137), else the service's 0\n%s", r.Status(), killed, tc.killed, r.Stderr)
			}
		})
	}
}

// TestIgnoredSignalsStillForwarded: a signal reaper's caller left ignored
// reaches a COMMAND that handles it, as it would without reaper (as tini
// and dumb-init forward it): the SIGINT of a script's background job
// (postgres's fast shutdown), nohup's SIGHUP.
func TestIgnoredSignalsStillForwarded(t *testing.T) {
	for _, tc := range []struct {
		name, script string
		sig          syscall.Signal
	}{
		{"background-job", `"$REAPER" -- "$HELPER" record "$REC" & echo "$!" > "$PIDS"; wait "$!"`, syscall.SIGINT},
		{"nohup", `echo "$$" > "$PIDS"; exec nohup "$REAPER" -- "$HELPER" record "$REC"`, syscall.SIGHUP},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rec, pids := itest.NewFIFO(t, "rec"), itest.NewFIFO(t, "pids")
			cmd := exec.Command("sh", "-c", tc.script)
			cmd.Dir = itest.SharedDir(t) // nohup.out, if any, goes there
			cmd.Env = append(os.Environ(), "REAPER="+itest.Bin().Reaper, "HELPER="+itest.Bin().Helper, "REC="+rec.Path, "PIDS="+pids.Path)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			timer := time.AfterFunc(itest.Deadline, func() { cmd.Process.Kill() })
			defer timer.Stop()
			reaper, err := strconv.Atoi(pids.Next(t))
			if err != nil {
				t.Fatal(err)
			}
			rec.Ready(t)
			syscall.Kill(reaper, tc.sig)
			if got := rec.Next(t); got != signals.Name(tc.sig) {
				t.Errorf("COMMAND recorded %s, want %s", got, signals.Name(tc.sig))
			}
			if err := cmd.Wait(); err != nil {
				t.Errorf("reaper: %v, want COMMAND's exit 0 on %s", err, signals.Name(tc.sig))
			}
		})
	}
}
