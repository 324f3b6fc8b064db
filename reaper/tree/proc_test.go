package tree

import (
	"errors"
	"os"
	"slices"
	"testing"

	"github.com/reaper-init/reaper/reaper/handle"
	"github.com/reaper-init/reaper/reaper/procfs"
)

// fakeProc is a Proc over a made-up tree: children lists by parent, and
// the pids /proc hides.
func fakeProc(children map[int][]int, hidden []int) (*Proc, *[]int) {
	root := os.Getpid() // Walk checks that root's children file exists
	var hid []int
	p := &Proc{
		Root: root, Threads: []int{root}, Hidden: func(pid int) { hid = append(hid, pid) },
		list: func(pid int, tids []int) []int { return children[pid] },
		open: func(pid, parent, root int) (*handle.Handle, procfs.Process, error) {
			if slices.Contains(hidden, pid) {
				return nil, procfs.Process{}, errHidden
			}
			return handle.Own(pid, -1), procfs.Process{PID: pid, PPID: parent, Threads: 1, State: 'S'}, nil
		},
	}
	return p, &hid
}

func TestWalkVisitsParentsFirstAndNamesHiddenOnes(t *testing.T) {
	p, hidden := fakeProc(nil, []int{12})
	root := p.Root
	children := map[int][]int{root: {10, 11}, 10: {12, 13}, 13: {14}}
	p.list = func(pid int, tids []int) []int { return children[pid] }
	var order []int
	p.Walk(func(h *handle.Handle) { order = append(order, h.PID) })
	if want := []int{10, 11, 13, 14}; !slices.Equal(order, want) {
		t.Errorf("visited %v, want %v", order, want)
	}
	if !slices.Equal(*hidden, []int{12}) {
		t.Errorf("hidden %v, want [12]", *hidden)
	}
}

// TestWalkIsBounded walks a tree whose root gains a newcomer every time its
// list is read, as under an orphan storm: the walk must end, after a few
// passes, having looked again at least once.
func TestWalkIsBounded(t *testing.T) {
	p, _ := fakeProc(nil, nil)
	root, next := p.Root, 1000
	var kids []int
	p.list = func(pid int, tids []int) []int {
		if pid != root {
			return nil
		}
		next++
		kids = append(kids, next)
		return kids
	}
	visited := 0
	p.Walk(func(h *handle.Handle) { visited++ })
	if visited < 2 || visited > maxPasses {
		t.Errorf("visited %d newcomers, want 2 to %d: one pass more than the first, at most %d", visited, maxPasses, maxPasses)
	}
}

// TestOpenListedOwnChild opens the handle a walk gives reaper's own child:
// found by waitid, no pidfd needed; and a pid that is no child of the
// caller's is gone to it.
func TestOpenListedOwnChild(t *testing.T) {
	pid, err := startSleep(t)
	if err != nil {
		t.Fatal(err)
	}
	h, stat, err := openListed(pid, os.Getpid(), os.Getpid())
	if err != nil || !h.IsChild() || h.FD() >= 0 || stat.PID != pid {
		t.Fatalf("openListed(own child) = %+v, %+v, %v", h, stat, err)
	}
	if _, _, err := openListed(1, os.Getpid(), os.Getpid()); !errors.Is(err, handle.ErrGone) {
		t.Errorf("openListed(1, as if a child) = %v, want ErrGone", err)
	}
}
