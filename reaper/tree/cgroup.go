package tree

import (
	"github.com/reaper-init/reaper/reaper/cgroup"
	"github.com/reaper-init/reaper/reaper/handle"
)

// Cgroup lists the members of the leaf group COMMAND was born in: no
// reparenting race. A descendant that moved out of the group (itself, or
// someone allowed to) while still below reaper is reaper's all the same:
// each walk also walks /proc, so that it gets the stop signal with the
// rest, not only the final SIGKILL; once the group is empty, only /proc is
// walked, for what wait4 still shows.
type Cgroup struct {
	Leaf    *cgroup.Leaf
	proc    *Proc
	empty   <-chan struct{} // closed once the leaf holds no process
	outside bool            // the last walk found descendants outside the leaf
}

// NewCgroup returns the tree of leaf, and of proc once leaf is empty. It
// watches the leaf for the moment it empties; where it cannot, it walks
// proc from the start, and the error says why.
func NewCgroup(leaf *cgroup.Leaf, proc *Proc) (*Cgroup, error) {
	c := &Cgroup{Leaf: leaf, proc: proc}
	empty, err := leaf.WatchEmpty()
	if err != nil {
		closed := make(chan struct{})
		close(closed)
		empty = closed
	}
	c.empty = empty
	return c, err
}

// drained reports whether the leaf holds no process any more: the watch
// saw it empty, or cgroup.events says so now (the watch may not have woken
// up yet).
func (c *Cgroup) drained() bool {
	select {
	case <-c.empty:
		return true
	default:
	}
	full, err := c.Leaf.Populated()
	return err == nil && !full
}

// Walk visits the leaf's members, reaper's own children through waitid
// alone (see handle.Child), the others through a pidfd checked for
// membership (see cgroup.Leaf.Member); then the descendants the /proc walk
// finds outside the leaf. Once the leaf is empty, it walks /proc alone.
func (c *Cgroup) Walk(visit func(*handle.Handle)) {
	if c.drained() {
		c.proc.Walk(visit)
		return
	}
	pids, _ := c.Leaf.Procs()
	members := make(map[int]bool, len(pids))
	for _, pid := range pids {
		members[pid] = true
		if h, ok := handle.Child(pid); ok {
			visit(h)
			continue
		}
		if h, err := c.Leaf.Member(pid); err == nil {
			visit(h)
		}
	}
	c.outside = false
	c.proc.walk(members, func(h *handle.Handle) {
		c.outside = true
		visit(h)
	})
}

// KillAll writes cgroup.kill (Linux 5.14 and later) while the leaf holds
// processes, unless the last walk found descendants outside the leaf:
// cgroup.kill reaches the leaf alone, so those need a SIGKILL of their
// own, and the caller then kills each one.
func (c *Cgroup) KillAll() bool {
	return !c.outside && !c.drained() && c.Leaf.Kill() == nil
}

// Done reports whether the leaf is empty and wait4 said ECHILD.
func (c *Cgroup) Done(noChildren bool) bool { return noChildren && c.drained() }

// Emptied returns the channel closed when the leaf empties.
func (c *Cgroup) Emptied() <-chan struct{} { return c.empty }
