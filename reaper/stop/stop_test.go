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
		// budget, when set, replaces Fixed(grace); mixed asks for the Mixed
		// order (the others: All).
		budget *Budget
		mixed  bool
		steps  []step
		phase  Phase // at the end
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
		{name: "mixed: COMMAND first, the others when it exits", grace: 4 * time.Second, mixed: true,
			steps: []step{
				{StopRequest, []Action{SignalCommand, ArmOthers, ArmGrace}},
				{Quiet, nil}, // what the request reached is gone: the others are not due
				{CommandExit, []Action{SignalOthers}},
				{OthersDue, nil},
				{Quiet, []Action{SignalMissed}},
				{TreeEmpty, []Action{Finish}},
			}, phase: Done, reason: Requested},
		{name: "mixed: the others at three quarters, SIGKILL at the deadline", grace: 4 * time.Second, mixed: true,
			steps: []step{
				{StopRequest, []Action{SignalCommand, ArmOthers, ArmGrace}},
				{OthersDue, []Action{SignalOthers}},
				{CommandExit, nil},
				{GraceExpired, []Action{ArmKillWait, KillTree}},
				{TreeEmpty, []Action{Finish}},
			}, phase: Done, reason: Requested},
		{name: "mixed: COMMAND is the last, nothing else to signal", grace: 4 * time.Second, mixed: true,
			steps: []step{
				{StopRequest, []Action{SignalCommand, ArmOthers, ArmGrace}},
				{CommandExitLast, []Action{SignalOthers}},
				{TreeEmpty, []Action{Finish}},
			}, phase: Done, reason: Requested},
		{name: "mixed: a second request kills everything", grace: 4 * time.Second, mixed: true,
			steps: []step{
				{StopRequest, []Action{SignalCommand, ArmOthers, ArmGrace}},
				{StopRequest, []Action{ArmKillWait, KillTree}},
				{OthersDue, nil},
				{TreeEmpty, []Action{Finish}},
			}, phase: Done, reason: Requested},
		{name: "mixed with --grace=0: SIGKILL at once", mixed: true,
			steps: []step{
				{StopRequest, []Action{SignalTree, ArmKillWait, KillTree}},
				{TreeEmpty, []Action{Finish}},
			}, phase: Done, reason: Requested},
		{name: "PID 1: no deadline for COMMAND; its leftovers get the grace", budget: &Budget{NoDeadline: true, Grace: time.Second}, mixed: true,
			steps: []step{
				{StopRequest, []Action{SignalCommand}},
				{GraceExpired, nil},
				{CommandExit, []Action{SignalOthers, ArmLeftovers}},
				{GraceExpired, []Action{ArmKillWait, KillTree}},
				{TreeEmpty, []Action{Finish}},
			}, phase: Done, reason: Requested},
		{name: "a unit's deadline: once COMMAND has exited, the leftovers get the grace, not the rest of it",
			budget: &Budget{Deadline: 325 * time.Second, Grace: 5 * time.Second}, mixed: true,
			steps: []step{
				{StopRequest, []Action{SignalCommand, ArmOthers, ArmGrace}},
				{CommandExit, []Action{SignalOthers, ArmLeftovers}},
				{CommandExit, nil},
				{GraceExpired, []Action{ArmKillWait, KillTree}},
				{TreeEmpty, []Action{Finish}},
			}, phase: Done, reason: Requested},
		{name: "a unit's deadline, all at once: the same",
			budget: &Budget{Deadline: 325 * time.Second, Grace: 5 * time.Second},
			steps: []step{
				{StopRequest, []Action{SignalTree, ArmGrace}},
				{CommandExit, []Action{ArmLeftovers}},
				{GraceExpired, []Action{ArmKillWait, KillTree}},
				{TreeEmpty, []Action{Finish}},
			}, phase: Done, reason: Requested},
		{name: "a unit's deadline shorter than the grace: the deadline stands",
			budget: &Budget{Deadline: 2 * time.Second, Grace: 2 * time.Second}, mixed: true,
			steps: []step{
				{StopRequest, []Action{SignalCommand, ArmOthers, ArmGrace}},
				{CommandExit, []Action{SignalOthers}},
				{GraceExpired, []Action{ArmKillWait, KillTree}},
				{TreeEmpty, []Action{Finish}},
			}, phase: Done, reason: Requested},
		{name: "no deadline, all at once: the leftovers get the grace once COMMAND is gone",
			budget: &Budget{NoDeadline: true, Grace: time.Second},
			steps: []step{
				{StopRequest, []Action{SignalTree}},
				{Quiet, []Action{SignalMissed}},
				{CommandExit, []Action{ArmLeftovers}},
				{CommandExit, nil},
				{GraceExpired, []Action{ArmKillWait, KillTree}},
				{TreeEmpty, []Action{Finish}},
			}, phase: Done, reason: Requested},
		{name: "no deadline, --wait: a request after COMMAND's exit gets the grace", budget: &Budget{NoDeadline: true, Grace: time.Second},
			mixed: true, wait: true,
			steps: []step{
				{CommandExit, nil},
				{StopRequest, []Action{SignalTree, ArmLeftovers}},
				{TreeEmpty, []Action{Finish}},
			}, phase: Done, reason: Requested},
		{name: "mixed: COMMAND's own exit stops the rest at once, as always", grace: time.Second, mixed: true,
			steps: []step{
				{CommandExit, []Action{SignalTree, ArmGrace}},
				{StopRequest, nil},
				{TreeEmpty, []Action{Finish}},
			}, phase: Done, reason: CommandExited},
		{name: "nothing after done", grace: time.Second,
			steps: []step{
				{CommandExitLast, []Action{Finish}},
				{StopRequest, nil},
				{TimeoutExpired, nil},
				{TreeEmpty, nil},
			}, phase: Done},
	} {
		t.Run(tc.name, func(t *testing.T) {
			budget, order := Fixed(tc.grace), All
			if tc.budget != nil {
				budget = *tc.budget
			}
			if tc.mixed {
				order = Mixed
			}
			m := New(budget, order, tc.wait)
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
// machine in each configuration: the phase never goes back, Finish or
// GiveUp come once at most, as the last action, when the machine is done,
// and the stop signal goes to the others once at most.
func TestPhasesOnlyMoveForward(t *testing.T) {
	events := []Event{CommandExit, CommandExitLast, StopRequest, TimeoutExpired, GraceExpired, KillWaitExpired, TreeEmpty, Quiet, OthersDue}
	budgets := []Budget{Fixed(0), Fixed(time.Second), ForPID1(), ForUnit(30 * time.Second)}
	for _, budget := range budgets {
		for _, order := range []Order{Mixed, All} {
			for _, wait := range []bool{false, true} {
				checkEverySequence(t, events, budget, order, wait)
			}
		}
	}
}

// checkEverySequence feeds every sequence of three events to one machine
// configuration (see TestPhasesOnlyMoveForward).
func checkEverySequence(t *testing.T, events []Event, budget Budget, order Order, wait bool) {
	config := fmt.Sprintf("budget %+v order %v wait %v", budget, order, wait)
	for _, a := range events {
		for _, b := range events {
			for _, c := range events {
				seq := []Event{a, b, c}
				m := New(budget, order, wait)
				last := m.Phase()
				ends, signalledOthers := 0, 0
				for _, ev := range seq {
					actions := m.Handle(ev)
					for i, action := range actions {
						switch action {
						case Finish, GiveUp:
							ends++
							if i != len(actions)-1 || m.Phase() != Done {
								t.Fatalf("%v %s: %v not last, or not done", seq, config, actions)
							}
						case SignalOthers, SignalTree:
							signalledOthers++
						}
					}
					if m.Phase() < last {
						t.Fatalf("%v %s: phase went back from %v to %v", seq, config, last, m.Phase())
					}
					last = m.Phase()
				}
				if ends > 1 {
					t.Fatalf("%v %s: ended %d times", seq, config, ends)
				}
				if signalledOthers > 1 {
					t.Fatalf("%v %s: the others were signalled %d times", seq, config, signalledOthers)
				}
			}
		}
	}
}

func ExampleMachine() {
	m := New(Fixed(5*time.Second), All, false)
	for _, ev := range []Event{CommandExit, GraceExpired, Quiet, TreeEmpty} {
		fmt.Println(ev, "->", m.Handle(ev))
	}
	// Output:
	// command exit -> [signal tree arm grace]
	// grace expired -> [arm kill wait kill tree]
	// quiet -> [kill tree]
	// tree empty -> [finish]
}
