package reaper

import (
	"errors"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// walk visits every living descendant of root (zombies excluded), parents
// before their children, as it finds them: each with a handle opened on it
// (see openHandle), which visit then owns. It follows
// /proc/PID/task/TID/children down from root; where the kernel has no
// children files (CONFIG_PROC_CHILDREN off) it falls back to one full scan
// of /proc.
//
// Of root itself it reads the children of the threads in rootThreads only
// (nil: every thread): reaper's children hang off the thread that forked
// them and the one orphans are reparented to, its main thread. Touching the
// /proc entries of a process's other threads is not free: the kernel must
// drop them when the process exits, which was seen to delay reaper's exit
// by up to 200 ms. Of a single-threaded process it reads the one thread's
// list without listing /proc/PID/task.
//
// The walk is not atomic. An orphan moves up to root, the subreaper, when
// its parent dies: if that happens after root's list was read and before the
// parent's, the walk misses it (all the more when visit signals what it
// gets). So the walk ends by reading root's list again, and walks down from
// any newcomer, until root's list holds nothing new (a second pass reads
// little else: seen processes are not entered again). Processes forked
// during the walk may be missed, which is why teardown repeats its walks.
//
// It returns the pids it found listed but could not read (see errHidden).
func walk(root int, rootThreads []int, visit func(*handle)) (hidden []int, err error) {
	if err := unix.Access(childrenPath(root, root), unix.R_OK); errors.Is(err, unix.ENOENT) {
		return nil, scanAll(root, visit)
	}
	seen := map[int]bool{root: true}
	single := map[int]bool{} // single-threaded: its only thread's id is its pid
	threadsOf := func(pid int) []int {
		switch {
		case pid == root:
			return rootThreads
		case single[pid]:
			return []int{pid}
		}
		return nil // every thread: list /proc/PID/task
	}
	for pass := 0; ; pass++ {
		fresh := 0
		queue := []int{root}
		for len(queue) > 0 {
			pid := queue[0]
			queue = queue[1:]
			for _, child := range childrenOf(pid, threadsOf(pid)) {
				if seen[child] {
					continue
				}
				seen[child] = true
				h, err := openHandle(child, pid, root)
				if errors.Is(err, errHidden) {
					hidden = append(hidden, child)
				}
				if err != nil {
					continue // gone, or dead and waiting to be reaped
				}
				if h.Threads == 1 {
					single[child] = true
				}
				queue = append(queue, child)
				fresh++
				visit(h)
			}
		}
		if fresh == 0 && pass > 0 {
			return hidden, nil
		}
	}
}

func childrenPath(pid, tid int) string {
	return procRoot + "/" + strconv.Itoa(pid) + "/task/" + strconv.Itoa(tid) + "/children"
}

// childrenOf lists the children of the given threads of pid, or of all its
// threads when tids is nil; nil when pid is gone.
func childrenOf(pid int, tids []int) []int {
	if tids == nil {
		var err error
		if tids, err = listPIDs(procRoot + "/" + strconv.Itoa(pid) + "/task"); err != nil {
			return nil
		}
	}
	var children []int
	var buf [512]byte
	for _, tid := range tids {
		data, err := readProcFile(childrenPath(pid, tid), buf[:])
		if err != nil {
			continue
		}
		pids, err := parseChildren(data)
		if err != nil {
			continue
		}
		children = append(children, pids...)
	}
	return children
}

// scanAll reads every /proc/PID/stat and visits the descendants of root.
func scanAll(root int, visit func(*handle)) error {
	pids, err := listPIDs(procRoot)
	if err != nil {
		return err
	}
	byParent := map[int][]int{}
	for _, pid := range pids {
		p, err := readProcess(pid)
		if err != nil || p.State == 'Z' {
			continue
		}
		byParent[p.PPID] = append(byParent[p.PPID], pid)
	}
	queue := []int{root}
	for len(queue) > 0 {
		parent := queue[0]
		queue = queue[1:]
		for _, pid := range byParent[parent] {
			if h, err := openHandle(pid, parent, root); err == nil {
				queue = append(queue, pid)
				visit(h)
			}
		}
	}
	return nil
}

// listPIDs returns the numeric entries of a /proc directory.
func listPIDs(dir string) ([]int, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	pids := make([]int, 0, len(names))
	for _, name := range names {
		if pid, err := strconv.Atoi(name); err == nil && pid > 0 {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}
