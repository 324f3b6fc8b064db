// Package stop is reaper's stop as a pure state machine: events go in
// (COMMAND exited, a stop request, a deadline passed, the tree is empty),
// actions come out (signal the tree, arm a timer, exit). It touches no
// process and reads no clock, so every path through it is tested in a
// table, without processes.
//
// A stop begins when COMMAND exits, on a stop request (a signal reaper
// received that is a stop request), or when --timeout expires.
//
// When COMMAND exited (or --timeout fired), every descendant gets the stop
// signal at once, and one grace period runs for all of them.
//
// A stop request goes to COMMAND first (Mixed, as systemd's
// KillMode=mixed): COMMAND stops its own workers in its own order, and the
// other descendants get the stop signal once COMMAND has exited, or when
// three quarters of the deadline have passed (whichever comes first). The
// deadline is the manager's (see Budget). Once COMMAND has exited, what is
// left gets the grace period from then, never past the deadline: the
// manager's time is COMMAND's, for its orderly stop, not a TERM-ignoring
// leftover's. All (KillMode=control-group) signals every descendant at
// once, as on COMMAND's exit.
//
// Whatever is left at the deadline gets SIGKILL, and so does whatever
// appears after, until nothing is left. A second stop request ends the
// wait early; a first one, when the stop began without a signal, changes
// nothing (docker stop's SIGTERM during a stop that already signalled
// everyone).
package stop

import "time"

// Order says who a stop request reaches first.
type Order int

// Orders.
const (
	// Mixed: COMMAND first; the other descendants once COMMAND has exited,
	// or three quarters into the deadline (systemd's KillMode=mixed, with
	// a grace for what is left).
	Mixed Order = iota
	// All: every descendant at once (systemd's KillMode=control-group).
	All
)

var orderNames = [...]string{"mixed", "control-group"}

func (o Order) String() string { return orderNames[o] }

// Phase is where a run stands; it only moves forward.
type Phase int

// Phases.
const (
	Running  Phase = iota // COMMAND runs; no stop has begun
	Draining              // --wait: COMMAND is gone, the rest may finish on their own
	Stopping              // the stop signal went out; the grace period runs
	Killing               // SIGKILL went out; every newcomer gets one too
	Done                  // nothing is left below reaper, or reaper gave up on it
)

var phaseNames = [...]string{"running", "draining", "stopping", "killing", "done"}

func (p Phase) String() string { return phaseNames[p] }

// Reason says what began a stop.
type Reason int

// Reasons.
const (
	CommandExited Reason = iota // COMMAND exited
	Requested                   // reaper received a stop request
	TimedOut                    // --timeout expired
)

var reasonNames = [...]string{"command exited", "signal", "timeout"}

func (r Reason) String() string { return reasonNames[r] }

// Event is something that happened.
type Event int

// Events.
const (
	CommandExit     Event = iota // COMMAND was reaped, and something is left below reaper
	CommandExitLast              // COMMAND was reaped, and nothing is left below reaper
	StopRequest                  // reaper received a stop request
	TimeoutExpired               // --timeout passed
	GraceExpired                 // the deadline passed (the grace period, or a stop request's)
	KillWaitExpired              // SIGKILLed processes did not go within the kill wait
	TreeEmpty                    // nothing is left below reaper
	Quiet                        // every process the stop signalled is gone, yet the tree is not empty
	OthersDue                    // three quarters of a stop request's deadline passed
)

var eventNames = [...]string{"command exit", "command exit (last)", "stop request", "timeout expired",
	"grace expired", "kill wait expired", "tree empty", "quiet", "others due"}

func (e Event) String() string { return eventNames[e] }

// Action is something the supervisor must do, in the order given.
type Action int

// Actions.
const (
	// SignalTree sends the stop signal to every descendant. When a stop
	// request began the stop, the request is forwarded first, as any
	// signal is, and the processes it reached get nothing more.
	SignalTree Action = iota
	// SignalCommand forwards the stop request that began the stop, as any
	// signal is: to COMMAND, or its process group.
	SignalCommand
	// SignalOthers sends the stop signal to every descendant the stop has
	// not signalled yet.
	SignalOthers
	// ArmOthers arms the time at which the others get the stop signal
	// whether COMMAND has exited or not: OthersAfter from the start of the
	// stop.
	ArmOthers
	// ArmLeftovers arms the deadline for what is left once COMMAND has
	// exited: the grace period, from now, unless the stop's deadline
	// (ArmGrace) comes sooner.
	ArmLeftovers
	// SignalMissed sends the stop signal to the descendants the stop has
	// not signalled yet that were running when it began: the walk missed
	// them. Those forked since wait for the SIGKILL.
	SignalMissed
	// KillTree SIGKILLs every descendant not killed yet.
	KillTree
	// ArmGrace arms the deadline, counted from the start of the stop:
	// DeadlineAfter.
	ArmGrace
	// ArmKillWait arms the deadline for SIGKILLed processes to go, and
	// disarms the grace deadline.
	ArmKillWait
	// Finish ends the run: nothing is left.
	Finish
	// GiveUp ends the run with processes that outlived SIGKILL.
	GiveUp
)

var actionNames = [...]string{"signal tree", "signal command", "signal others", "arm others", "arm leftovers",
	"signal missed", "kill tree", "arm grace", "arm kill wait", "finish", "give up"}

func (a Action) String() string { return actionNames[a] }

// Machine is one run's stop.
type Machine struct {
	budget      Budget
	order       Order
	wait        bool
	phase       Phase
	reason      Reason
	deadline    time.Duration // the stop's, from its start
	requests    int           // stop requests received since the stop began
	commandGone bool          // COMMAND has exited
	othersSent  bool          // every descendant got the stop signal (or the request)
	leftovers   bool          // the leftovers' grace period is armed
	killedTwice bool          // the kill wait expired once, and the tree was killed again
}

// New returns the machine of a run with this budget and order; wait is
// --wait (when COMMAND exits, let the rest finish on their own).
func New(budget Budget, order Order, wait bool) *Machine {
	return &Machine{budget: budget, order: order, wait: wait}
}

// DeadlineAfter returns the stop's deadline, counted from its start: what
// ArmGrace arms.
func (m *Machine) DeadlineAfter() time.Duration { return m.deadline }

// OthersAfter returns when the other descendants get the stop signal even
// though COMMAND runs on, counted from the start of the stop: what
// ArmOthers arms.
func (m *Machine) OthersAfter() time.Duration { return m.budget.OthersAfter() }

// LeftoversGrace returns the grace period of what is left once COMMAND has
// exited during a stop request's stop: what ArmLeftovers arms.
func (m *Machine) LeftoversGrace() time.Duration { return m.budget.Grace }

// Phase returns where the run stands.
func (m *Machine) Phase() Phase { return m.phase }

// Reason returns what began the stop; meaningful once one has.
func (m *Machine) Reason() Reason { return m.reason }

// Stopping reports whether a stop has begun.
func (m *Machine) Stopping() bool { return m.phase >= Stopping }

// TimedOut reports whether --timeout began the stop.
func (m *Machine) TimedOut() bool { return m.reason == TimedOut }

// Handle takes one event and returns what to do about it.
func (m *Machine) Handle(ev Event) []Action {
	switch m.phase {
	case Running, Draining:
		return m.beforeStop(ev)
	case Stopping:
		return m.stopping(ev)
	case Killing:
		return m.killing(ev)
	}
	return nil
}

func (m *Machine) beforeStop(ev Event) []Action {
	switch {
	case ev == CommandExitLast && m.phase == Running, ev == TreeEmpty && m.phase == Draining:
		m.phase = Done
		return []Action{Finish}
	case ev == CommandExit && m.phase == Running && m.wait:
		m.phase, m.commandGone = Draining, true
		return nil
	case ev == CommandExit && m.phase == Running:
		m.commandGone = true
		return m.begin(CommandExited)
	case ev == StopRequest && (m.commandGone || m.order == All):
		return m.beginAll(Requested)
	case ev == StopRequest:
		return m.beginMixed()
	case ev == TimeoutExpired:
		return m.begin(TimedOut)
	}
	return nil
}

// begin starts a stop without a request: the stop signal to all, then the
// grace period, or SIGKILL at once without one.
func (m *Machine) begin(r Reason) []Action {
	m.phase, m.reason, m.othersSent = Stopping, r, true
	m.deadline = m.budget.Grace
	if m.deadline <= 0 {
		return append([]Action{SignalTree}, m.kill()...)
	}
	return []Action{SignalTree, ArmGrace}
}

// beginAll starts a stop request's stop with every descendant at once:
// the request's deadline, or, with none, the grace period for what is
// left once COMMAND has exited.
func (m *Machine) beginAll(r Reason) []Action {
	m.phase, m.reason, m.othersSent = Stopping, r, true
	m.deadline = m.budget.Deadline
	switch {
	case m.budget.NoDeadline && m.commandGone:
		m.leftovers = true
		return []Action{SignalTree, ArmLeftovers}
	case m.budget.NoDeadline:
		return []Action{SignalTree}
	case m.deadline <= 0:
		return append([]Action{SignalTree}, m.kill()...)
	}
	return []Action{SignalTree, ArmGrace}
}

// beginMixed starts a stop request's stop with COMMAND alone: the others
// when it exits, or when ArmOthers fires.
func (m *Machine) beginMixed() []Action {
	if !m.budget.NoDeadline && m.budget.Deadline <= 0 {
		return m.beginAll(Requested) // no time for an order: SIGKILL follows at once
	}
	m.phase, m.reason = Stopping, Requested
	if m.budget.NoDeadline {
		return []Action{SignalCommand}
	}
	m.deadline = m.budget.Deadline
	return []Action{SignalCommand, ArmOthers, ArmGrace}
}

// commandExited handles COMMAND's exit during a stop: the others get the
// stop signal now, if they have not yet, and, in a stop request's stop,
// the leftovers get the grace period where it ends before the deadline
// (there is none, or the manager's is longer).
func (m *Machine) commandExited() []Action {
	m.commandGone = true
	var actions []Action
	if !m.othersSent {
		m.othersSent = true
		actions = append(actions, SignalOthers)
	}
	sooner := m.budget.NoDeadline || m.budget.Grace < m.deadline
	if m.reason == Requested && sooner && !m.leftovers {
		m.leftovers = true
		actions = append(actions, ArmLeftovers)
	}
	return actions
}

// kill ends the grace period.
func (m *Machine) kill() []Action {
	m.phase = Killing
	return []Action{ArmKillWait, KillTree}
}

func (m *Machine) stopping(ev Event) []Action {
	switch ev {
	case CommandExit, CommandExitLast:
		return m.commandExited()
	case OthersDue:
		if m.othersSent {
			return nil
		}
		m.othersSent = true
		return []Action{SignalOthers}
	case StopRequest:
		m.requests++
		if m.reason == Requested || m.requests > 1 {
			return m.kill()
		}
		return nil // everyone got the stop signal already: the deadline stands
	case GraceExpired:
		if m.reason == Requested && m.budget.NoDeadline && !m.leftovers {
			return nil // no deadline was armed
		}
		return m.kill()
	case Quiet:
		if !m.othersSent {
			return nil // the others are not due yet
		}
		return []Action{SignalMissed}
	case TreeEmpty:
		m.phase = Done
		return []Action{Finish}
	}
	return nil
}

func (m *Machine) killing(ev Event) []Action {
	switch ev {
	case Quiet:
		return []Action{KillTree} // what is left was forked after the last walk
	case TreeEmpty:
		m.phase = Done
		return []Action{Finish}
	case KillWaitExpired:
		if !m.killedTwice {
			// One more kill for what came since the last walk without the
			// tree going quiet (a process stuck in the kernel keeps it from
			// it), then a last wait.
			m.killedTwice = true
			return []Action{ArmKillWait, KillTree}
		}
		m.phase = Done
		return []Action{GiveUp}
	}
	return nil
}
