package tree

import (
	"syscall"

	"github.com/reaper-init/reaper/reaper/cgroup"
	"github.com/reaper-init/reaper/reaper/handle"
)

// Blind is the tree of a reaper whose /proc belongs to another PID
// namespace (unshare --pid --fork without --mount-proc): every pid read
// there would mean something else to reaper's system calls. The one safe
// thing left is COMMAND's process group, while COMMAND, its leader, is not
// reaped: its group id cannot be reused until then.
type Blind struct {
	Leader int  // COMMAND's pid, its process group id
	PID1   bool // reaper is PID 1: when it exits, the kernel kills the rest
	// Leaf is the cgroup COMMAND was born in, if any: cgroup.kill needs
	// no pid.
	Leaf   *cgroup.Leaf
	killed bool
}

// Walk visits COMMAND's process group while COMMAND lives.
func (b *Blind) Walk(visit func(*handle.Handle)) {
	if _, ok := handle.Child(b.Leader); ok {
		visit(handle.Group(b.Leader))
	}
}

// KillAll SIGKILLs COMMAND's process group while COMMAND lives, and the
// cgroup: all it can reach.
func (b *Blind) KillAll() bool {
	if _, ok := handle.Child(b.Leader); ok {
		handle.Group(b.Leader).Signal(syscall.SIGKILL)
	}
	if b.Leaf != nil {
		b.Leaf.Kill()
	}
	b.killed = true
	return true
}

// Done is wait4's word; as PID 1, also once everything was killed and
// COMMAND is gone: the kernel kills the rest of the namespace when PID 1
// exits.
func (b *Blind) Done(noChildren bool) bool {
	if noChildren {
		return true
	}
	_, commandLives := handle.Child(b.Leader)
	return b.PID1 && b.killed && !commandLives
}

// Emptied returns nil: only wait4 can tell.
func (b *Blind) Emptied() <-chan struct{} { return nil }
