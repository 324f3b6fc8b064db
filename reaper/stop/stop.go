// Package stop is reaper's stop as a pure state machine: events go in
// (COMMAND exited, a stop request, a deadline passed, the tree is empty),
// actions come out (signal the tree, arm a timer, exit). It touches no
// process and reads no clock, so every path through it is tested in a
// table, without processes.
//
// A stop begins when COMMAND exits, on a stop request (a signal reaper
// received that is a stop request), or when --timeout expires. Every
// descendant gets the stop signal at once; one grace period runs for all
// of them; whatever is left then gets SIGKILL, and so does whatever appears
// after, until nothing is left. A second stop request ends the grace period
// early; a first one, when the stop began without a signal, changes
// nothing (docker stop's SIGTERM during a stop that already signalled
// everyone).
package stop

import "time"

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
	GraceExpired                 // the grace period passed
	KillWaitExpired              // SIGKILLed processes did not go within the kill wait
	TreeEmpty                    // nothing is left below reaper
	Quiet                        // every process the stop signalled is gone, yet the tree is not empty
)

var eventNames = [...]string{"command exit", "command exit (last)", "stop request", "timeout expired",
	"grace expired", "kill wait expired", "tree empty", "quiet"}

func (e Event) String() string { return eventNames[e] }

// Action is something the supervisor must do, in the order given.
type Action int

// Actions.
const (
	// SignalTree sends the stop signal to every descendant. When a stop
	// request began the stop, the request is forwarded first, as any
	// signal is, and the processes it reached get nothing more.
	SignalTree Action = iota
	// SignalMissed sends the stop signal to the descendants the stop has
	// not signalled yet that were running when it began: the walk missed
	// them. Those forked since wait for the SIGKILL.
	SignalMissed
	// KillTree SIGKILLs every descendant not killed yet.
	KillTree
	// ArmGrace arms the grace deadline, counted from the start of the
	// stop.
	ArmGrace
	// ArmKillWait arms the deadline for SIGKILLed processes to go, and
	// disarms the grace deadline.
	ArmKillWait
	// Finish ends the run: nothing is left.
	Finish
	// GiveUp ends the run with processes that outlived SIGKILL.
	GiveUp
)

var actionNames = [...]string{"signal tree", "signal missed", "kill tree", "arm grace", "arm kill wait", "finish", "give up"}

func (a Action) String() string { return actionNames[a] }

// Machine is one run's stop.
type Machine struct {
	grace       time.Duration
	wait        bool
	phase       Phase
	reason      Reason
	requests    int  // stop requests received since the stop began
	killedTwice bool // the kill wait expired once, and the tree was killed again
}

// New returns the machine of a run with this grace period; wait is --wait
// (when COMMAND exits, let the rest finish on their own).
func New(grace time.Duration, wait bool) *Machine {
	return &Machine{grace: grace, wait: wait}
}

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
		m.phase = Draining
		return nil
	case ev == CommandExit && m.phase == Running:
		return m.begin(CommandExited)
	case ev == StopRequest:
		return m.begin(Requested)
	case ev == TimeoutExpired:
		return m.begin(TimedOut)
	}
	return nil
}

// begin starts a stop: the stop signal to all, then the grace period, or
// SIGKILL at once without one.
func (m *Machine) begin(r Reason) []Action {
	m.phase, m.reason = Stopping, r
	if m.grace <= 0 {
		return append([]Action{SignalTree}, m.kill()...)
	}
	return []Action{SignalTree, ArmGrace}
}

// kill ends the grace period.
func (m *Machine) kill() []Action {
	m.phase = Killing
	return []Action{ArmKillWait, KillTree}
}

func (m *Machine) stopping(ev Event) []Action {
	switch ev {
	case StopRequest:
		m.requests++
		if m.reason == Requested || m.requests > 1 {
			return m.kill()
		}
		return nil // everyone got the stop signal already: the deadline stands
	case GraceExpired:
		return m.kill()
	case Quiet:
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
