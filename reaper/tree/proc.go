package tree

import (
	"errors"

	"golang.org/x/sys/unix"

	"github.com/reaper-init/reaper/reaper/handle"
	"github.com/reaper-init/reaper/reaper/procfs"
)

// maxPasses bounds one walk of /proc. A walk reads root's children again
// after going down, for the orphans that moved up to root meanwhile; an
// orphan storm could make that go on for ever, on reaper's event loop,
// with no reaping and no timer meanwhile. What a bounded walk misses, the
// next walk finds.
const maxPasses = 4

// Proc walks /proc/PID/task/TID/children down from Root; where the kernel
// has no children files (CONFIG_PROC_CHILDREN off) it falls back to one
// full scan of /proc.
//
// Of Root itself it reads the children of the threads in Threads only:
// reaper's children hang off the thread that forked them and the one
// orphans are reparented to, its main thread. Touching the /proc entries
// of a process's other threads is not free: the kernel must drop them when
// the process exits, which was seen to delay reaper's exit by up to
// 200 ms. Of a single-threaded process it reads the one thread's list
// without listing /proc/PID/task.
type Proc struct {
	Root    int
	Threads []int
	// Hidden is called with each pid listed as a descendant that /proc
	// will not show (hidepid=2 hides other users' processes: a setuid
	// program below an unprivileged reaper, say). It cannot be signalled.
	Hidden func(pid int)
	// Exclude is a child of Root's that is no descendant to walk (reaper's
	// guardian), or 0.
	Exclude int

	// list and open are procfs.Children and openListed, replaced in tests.
	list func(pid int, tids []int) []int
	open func(pid, parent, root int) (*handle.Handle, procfs.Process, error)
	// noChildrenFiles: the kernel has no children files (looked at once).
	noChildrenFiles bool
}

// NewProc returns the /proc walk from root, reading root's children from
// the threads given.
func NewProc(root int, threads []int, hidden func(pid int)) *Proc {
	err := unix.Access(procfs.ChildrenPath(root, root), unix.R_OK)
	return &Proc{Root: root, Threads: threads, Hidden: hidden, list: procfs.Children, open: openListed,
		noChildrenFiles: errors.Is(err, unix.ENOENT)}
}

// errHidden means a listed process lives but /proc will not show it.
var errHidden = errors.New("process cannot be read")

// Walk visits every living descendant of Root, parents before their
// children. It reads Root's list again at the end and walks down from any
// newcomer (an orphan that moved up while a parent was read), at most
// maxPasses times in all.
func (p *Proc) Walk(visit func(*handle.Handle)) { p.walk(nil, visit) }

// walk is Walk, but for the processes in skip: it neither opens nor visits
// them, and walks down from them all the same.
func (p *Proc) walk(skip map[int]bool, visit func(*handle.Handle)) {
	if p.noChildrenFiles {
		p.scanAll(skip, visit)
		return
	}
	seen := map[int]bool{p.Root: true}
	single := map[int]bool{} // single-threaded and its main thread alive: its only thread's id is its pid
	threadsOf := func(pid int) []int {
		switch {
		case pid == p.Root:
			return p.Threads
		case single[pid]:
			return []int{pid}
		}
		return nil // every thread: list /proc/PID/task
	}
	for pass := 0; pass < maxPasses; pass++ {
		fresh := 0
		queue := []int{p.Root}
		for len(queue) > 0 {
			pid := queue[0]
			queue = queue[1:]
			for _, child := range p.list(pid, threadsOf(pid)) {
				if seen[child] || pid == p.Root && child == p.Exclude && child != 0 {
					continue
				}
				seen[child] = true
				fresh++
				if skip[child] {
					if stat, err := procfs.Stat(child); err == nil && stat.Threads == 1 && stat.State != 'Z' {
						single[child] = true
					}
					queue = append(queue, child)
					continue
				}
				h, stat, err := p.open(child, pid, p.Root)
				if errors.Is(err, errHidden) && p.Hidden != nil {
					p.Hidden(child)
				}
				if err != nil {
					continue // gone, or exited and waiting to be reaped
				}
				// A process whose main thread has exited (state Z) has its
				// children on its other threads.
				if stat.Threads == 1 && stat.State != 'Z' {
					single[child] = true
				}
				if stat.PID != 0 {
					h.Remember(stat)
				}
				queue = append(queue, child)
				visit(h)
			}
		}
		if fresh == 0 && pass > 0 {
			return
		}
	}
}

// openListed opens a handle on pid, which a walk of the tree below root
// found among parent's children, and returns its stat. It returns
// handle.ErrGone when that process has exited since, or is not below root.
//
// A child of root needs no more: listed in root's children and not exited
// (waitid says so), its pid is reserved until root reaps it. For a deeper
// descendant the pidfd comes first and the stat after, whose parent must
// be the one the walk saw, or root (orphans move up to root, the
// subreaper), or else the chain of parents must reach root.
func openListed(pid, parent, root int) (*handle.Handle, procfs.Process, error) {
	if parent == root {
		h, ok := handle.Child(pid)
		if !ok {
			return nil, procfs.Process{}, handle.ErrGone
		}
		stat, err := procfs.Stat(pid)
		if err != nil {
			// hidepid hides it, but a child can be signalled safely all
			// the same.
			stat = procfs.Process{}
		}
		return h, stat, nil
	}
	var stat procfs.Process
	h, err := handle.Open(pid, func() error {
		var err error
		if stat, err = procfs.Stat(pid); err != nil {
			return errHidden // it lives (Open checks), yet /proc will not show it
		}
		if stat.PPID != parent && stat.PPID != root && !procfs.Descends(pid, root) {
			return handle.ErrGone // its pid was reused by a process outside the tree
		}
		return nil
	})
	return h, stat, err
}

// scanAll reads every /proc/PID/stat and visits the descendants of Root,
// those in skip aside.
func (p *Proc) scanAll(skip map[int]bool, visit func(*handle.Handle)) {
	pids, err := procfs.ListPIDs(procfs.Root)
	if err != nil {
		return
	}
	byParent := map[int][]int{}
	for _, pid := range pids {
		if stat, err := procfs.Stat(pid); err == nil {
			byParent[stat.PPID] = append(byParent[stat.PPID], pid)
		}
	}
	queue := []int{p.Root}
	for len(queue) > 0 {
		parent := queue[0]
		queue = queue[1:]
		for _, pid := range byParent[parent] {
			if parent == p.Root && pid == p.Exclude && pid != 0 {
				continue
			}
			if skip[pid] {
				queue = append(queue, pid)
				continue
			}
			if h, _, err := p.open(pid, parent, p.Root); err == nil {
				queue = append(queue, pid)
				visit(h)
			}
		}
	}
}

// KillAll reports false: /proc offers no way to kill a tree at once.
func (p *Proc) KillAll() bool { return false }

// Done is wait4's word: a subreaper without children has no descendants.
func (p *Proc) Done(noChildren bool) bool { return noChildren }

// Emptied returns nil: only wait4 can tell.
func (p *Proc) Emptied() <-chan struct{} { return nil }
