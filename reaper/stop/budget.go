package stop

import "time"

// DefaultGrace is the grace period where nobody gives one: what is left
// once COMMAND has exited on its own gets this long between the stop
// signal and SIGKILL, and so does a stop request where no manager sets a
// deadline (a shell, CI).
const DefaultGrace = 5 * time.Second

// Budget is how long a stop may take before reaper SIGKILLs what is left.
type Budget struct {
	// Deadline bounds a stop begun by a stop request, from its start to
	// the SIGKILL of everything left.
	Deadline time.Duration
	// NoDeadline: a stop request has no deadline of reaper's own (the
	// manager's SIGKILL ends everything: PID 1 of a container, a unit with
	// TimeoutStopSec=infinity). Once COMMAND has exited, what is left gets
	// Grace.
	NoDeadline bool
	// Grace bounds a stop begun by COMMAND's exit or by --timeout, from
	// its start.
	Grace time.Duration
	// Source says where the budget came from, for the log.
	Source string
}

// Fixed is the budget of an explicit --grace: one deadline for every stop.
func Fixed(grace time.Duration) Budget {
	return Budget{Deadline: grace, Grace: grace, Source: "--grace"}
}

// Default is the budget where nobody gives one: DefaultGrace for every
// stop.
func Default() Budget {
	return Budget{Deadline: DefaultGrace, Grace: DefaultGrace, Source: "default"}
}

// ForPID1 is the budget of PID 1 of a container: a stop request has no
// deadline of reaper's own, since the engine SIGKILLs the whole namespace
// at its own (docker stop's 10 s, a pod's terminationGracePeriodSeconds),
// and COMMAND must not be killed earlier than it would be without reaper.
func ForPID1() Budget {
	return Budget{NoDeadline: true, Grace: DefaultGrace, Source: "PID 1: the container engine's own SIGKILL"}
}

// ForUnit is the budget inside a systemd service whose stop timeout
// (TimeoutStopUSec) is timeout, 0 for infinity: a stop request gets the
// unit's timeout less a margin, so that reaper's own SIGKILL of what is
// left, and its exit, come before systemd's SIGKILL.
func ForUnit(timeout time.Duration) Budget {
	if timeout <= 0 {
		return Budget{NoDeadline: true, Grace: DefaultGrace, Source: "the unit's TimeoutStopSec=infinity"}
	}
	deadline := timeout - unitMargin(timeout)
	return Budget{Deadline: deadline, Grace: min(DefaultGrace, deadline), Source: "the unit's TimeoutStopSec"}
}

// unitMargin is the part of a unit's stop timeout reaper keeps for itself:
// a tenth, between half a second and five seconds, and never more than
// half of the timeout.
func unitMargin(timeout time.Duration) time.Duration {
	margin := min(max(timeout/10, 500*time.Millisecond), 5*time.Second)
	return min(margin, timeout/2)
}

// OthersAfter is when, counted from the start of a stop request's stop,
// the descendants other than COMMAND get the stop signal even though
// COMMAND has not exited: three quarters into the deadline, which leaves
// them a quarter for their own shutdown. Without a deadline, never.
func (b Budget) OthersAfter() time.Duration {
	return b.Deadline * 3 / 4
}
