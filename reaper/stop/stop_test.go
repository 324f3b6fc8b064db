package stop

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// step is one event and the actions it must give.
type step struct {
	ev   Event
	want []Action
}

func TestMachine(t *testing.T) {
	for _, tc := range []struct {
		name  string
		grace time.Duration
		wait  bool
		steps []step
		phase Phase // at the end
		// reason and timedOut at the end, when a stop began
		reason   Reason
		timedOut bool
	}{
		{name: "command exits alone", grace: time.Second,
			steps: []step{{CommandExitLast, []Action{Finish}}}, phase: Done},
		{name: "command exits, the rest exits on the stop signal", grace: time.Second,
			steps: []step{
				{CommandExit, []Action{SignalTree, ArmGrace}},
				{TreeEmpty, []Action{Finish}},
			}, phase: Done, reason: CommandExited},
		{name: "command exits, the rest needs SIGKILL", grace: time.Second,
			steps: []step{
				{CommandExit, []Action{SignalTree, ArmGrace}},
				{GraceExpired, []Action{ArmKillWait, KillTree}},
				{TreeEmpty, []Action{Finish}},
			}, phase: Done, reason: CommandExited},
		{name: "a walk missed some: they get the stop signal", grace: time.Second,
			steps: []step{
				{CommandExit, []Action{SignalTree, ArmGrace}},
				{Quiet, []Action{SignalMissed}},
				{Quiet, []Action{SignalMissed}},
				{TreeEmpty, []Action{Finish}},
			}, phase: Done, reason: CommandExited},
		{name: "forks during the kill get SIGKILL", grace: time.Second,
			steps: []step{
				{CommandExit, []Action{SignalTree, ArmGrace}},
				{GraceExpired, []Action{ArmKillWait, KillTree}},
				{Quiet, []Action{KillTree}},
				{Quiet, []Action{KillTree}},
				{TreeEmpty, []Action{Finish}},
			}, phase: Done, reason: CommandExited},
		{name: "grace zero: SIGKILL right after the stop signal",
			steps: []step{
				{CommandExit, []Action{SignalTree, ArmKillWait, KillTree}},
				{TreeEmpty, []Action{Finish}},
			}, phase: Done, reason: CommandExited},
		{name: "a stop request stops; a second one kills", grace: time.Second,
			steps: []step{
				{StopRequest, []Action{SignalTree, ArmGrace}},
				{StopRequest, []Action{ArmKillWait, KillTree}},
				{StopRequest, nil},
				{CommandExit, nil},
				{TreeEmpty, []Action{Finish}},
			}, phase: Done, reason: Requested},
		{name: "one stop request during a stop that began with an exit keeps the deadline", grace: time.Second,
			steps: []step{
				{CommandExit, []Action{SignalTree, ArmGrace}},
				{StopRequest, nil},
				{StopRequest, []Action{ArmKillWait, KillTree}},
				{TreeEmpty, []Action{Finish}},
			}, phase: Done, reason: CommandExited},
		{name: "timeout stops; a later timeout or request changes nothing at once", grace: time.Second,
			steps: []step{
				{TimeoutExpired, []Action{SignalTree, ArmGrace}},
				{TimeoutExpired, nil},
				{StopRequest, nil},
				{CommandExit, nil},
				{GraceExpired, []Action{ArmKillWait, KillTree}},
				{TreeEmpty, []Action{Finish}},
			}, phase: Done, reason: TimedOut, timedOut: true},
		{name: "a timeout during a stop keeps the status", grace: time.Second,
			steps: []step{
				{StopRequest, []Action{SignalTree, ArmGrace}},
				{TimeoutExpired, nil},
				{TreeEmpty, []Action{Finish}},
			}, phase: Done, reason: Requested},
		{name: "processes that outlive SIGKILL", grace: time.Second,
			steps: []step{
				{CommandExit, []Action{SignalTree, ArmGrace}},
				{GraceExpired, []Action{ArmKillWait, KillTree}},
				{KillWaitExpired, []Action{ArmKillWait, KillTree}}, // once more, for what came since
				{KillWaitExpired, []Action{GiveUp}},
				{TreeEmpty, nil},
			}, phase: Done, reason: CommandExited},
		{name: "--wait: the rest finishes on its own", grace: time.Second, wait: true,
			steps: []step{
				{CommandExit, nil},
				{Quiet, nil},
				{TreeEmpty, []Action{Finish}},
			}, phase: Done},
		{name: "--wait: a stop request still stops", grace: time.Second, wait: true,
			steps: []step{
				{CommandExit, nil},
				{StopRequest, []Action{SignalTree, ArmGrace}},
				{TreeEmpty, []Action{Finish}},
			}, phase: Done, reason: Requested},
		{name: "--wait bounded by --timeout", grace: time.Second, wait: true,
			steps: []step{
				{CommandExit, nil},
				{TimeoutExpired, []Action{SignalTree, ArmGrace}},
				{GraceExpired, []Action{ArmKillWait, KillTree}},
				{TreeEmpty, []Action{Finish}},
			}, phase: Done, reason: TimedOut, timedOut: true},
		{name: "--wait: nothing left at the exit", grace: time.Second, wait: true,
			steps: []step{{CommandExitLast, []Action{Finish}}}, phase: Done},
		{name: "events before any stop change nothing", grace: time.Second,
			steps: []step{
				{TreeEmpty, nil},
				{Quiet, nil},
				{GraceExpired, nil},
				{KillWaitExpired, nil},
			}, phase: Running},
		{name: "nothing after done", grace: time.Second,
			steps: []step{
				{CommandExitLast, []Action{Finish}},
				{StopRequest, nil},
				{TimeoutExpired, nil},
				{TreeEmpty, nil},
			}, phase: Done},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := New(tc.grace, tc.wait)
			for i, s := range tc.steps {
				if got := m.Handle(s.ev); !slices.Equal(got, s.want) {
					t.Fatalf("step %d, %v: actions %v, want %v", i, s.ev, got, s.want)
				}
			}
			if m.Phase() != tc.phase {
				t.Errorf("phase %v, want %v", m.Phase(), tc.phase)
			}
			if m.Stopping() && (m.Reason() != tc.reason || m.TimedOut() != tc.timedOut) {
				t.Errorf("reason %v timed out %v, want %v %v", m.Reason(), m.TimedOut(), tc.reason, tc.timedOut)
			}
		})
	}
}

// TestPhasesOnlyMoveForward feeds every sequence of three events to a
// machine in each configuration: the phase never goes back, and Finish or
// GiveUp come once at most, as the last action, when the machine is done.
func TestPhasesOnlyMoveForward(t *testing.T) {
	events := []Event{CommandExit, CommandExitLast, StopRequest, TimeoutExpired, GraceExpired, KillWaitExpired, TreeEmpty, Quiet}
	for _, grace := range []time.Duration{0, time.Second} {
		for _, wait := range []bool{false, true} {
			for _, a := range events {
				for _, b := range events {
					for _, c := range events {
						seq := []Event{a, b, c}
						m := New(grace, wait)
						last := m.Phase()
						ends := 0
						for _, ev := range seq {
							acts := m.Handle(ev)
							for i, act := range acts {
								if act == Finish || act == GiveUp {
									ends++
									if i != len(acts)-1 || m.Phase() != Done {
										t.Fatalf("%v grace %v wait %v: %v not last, or not done", seq, grace, wait, acts)
									}
								}
							}
							if m.Phase() < last {
								t.Fatalf("%v grace %v wait %v: phase went back from %v to %v", seq, grace, wait, last, m.Phase())
							}
							last = m.Phase()
						}
						if ends > 1 {
							t.Fatalf("%v: ended %d times", seq, ends)
						}
					}
				}
			}
		}
	}
}

func ExampleMachine() {
	m := New(5*time.Second, false)
	for _, ev := range []Event{CommandExit, GraceExpired, Quiet, TreeEmpty} {
		fmt.Println(ev, "->", m.Handle(ev))
	}
	// Output:
	// command exit -> [signal tree arm grace]
	// grace expired -> [arm kill wait kill tree]
	// quiet -> [kill tree]
	// tree empty -> [finish]
}
