// Package tree answers "who are reaper's descendants, and are they gone".
// One interface, Tree, has three implementations: Cgroup, the members of
// the cgroup v2 leaf COMMAND was born in; Proc, a walk of /proc from
// reaper down; and Blind, for a reaper that cannot trust /proc.
//
// A subreaper with no child left has no descendant left: wait4's ECHILD is
// the last word on emptiness, and the supervisor owns wait4. A Tree adds
// what wait4 cannot see (a populated cgroup).
package tree

import (
	"github.com/reaper-init/reaper/reaper/handle"
)

// Tree is reaper's view of its descendants.
type Tree interface {
	// Walk calls visit with a handle on each living descendant it finds,
	// parents before their children where it can tell; visit owns the
	// handle. A walk is not atomic: processes forked meanwhile may be
	// missed, which is why a teardown walks again.
	Walk(visit func(*handle.Handle))
	// KillAll SIGKILLs every descendant at once, forks racing it
	// included, and reports whether it could; when it cannot, the caller
	// walks and kills each one.
	KillAll() bool
	// Done reports whether nothing is left, given whether wait4 said
	// ECHILD.
	Done(noChildren bool) bool
	// Emptied returns a channel closed when Done may have become true
	// without an event of wait4's (the cgroup emptied); nil when only
	// wait4 can tell.
	Emptied() <-chan struct{}
}
