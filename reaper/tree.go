package reaper

import (
	"errors"
	"io/fs"
	"os"
	"strconv"
)

// descendants returns every living descendant of root (zombies excluded),
// parents before their children. It follows /proc/PID/task/TID/children down
// from root; where the kernel has no children files (CONFIG_PROC_CHILDREN
// off) it falls back to one full scan of /proc.
//
// Of root itself it reads the children of the threads in rootThreads only
// (nil: every thread): reaper's children hang off the thread that forked
// them and the one orphans are reparented to, its main thread. Touching the
// /proc entries of a process's other threads is not free: the kernel must
// drop them when the process exits, which was seen to delay reaper's exit
// by up to 200 ms.
//
// The walk is not atomic. An orphan moves up to root, the subreaper, when
// its parent dies: if that happens after root's list was read and before the
// parent's, the walk misses it. So the walk ends by reading root's list
// again, and walks down from any newcomer, until root's list holds nothing
// new (a second pass reads little else: seen processes are not entered
// again). Processes that exit during the walk are skipped; processes forked
// during it may be missed, which is why teardown repeats its walks.
func descendants(root int, rootThreads []int) ([]process, error) {
	if _, err := os.Stat(childrenPath(root, root)); errors.Is(err, fs.ErrNotExist) {
		return scanAll(root)
	}
	var found []process
	seen := map[int]bool{root: true}
	for pass := 0; ; pass++ {
		fresh := 0
		queue := []int{root}
		for len(queue) > 0 {
			pid := queue[0]
			queue = queue[1:]
			var threads []int
			if pid == root {
				threads = rootThreads
			}
			for _, child := range childrenOf(pid, threads) {
				if seen[child] {
					continue
				}
				seen[child] = true
				p, err := readProcess(child)
				if err != nil || p.State == 'Z' {
					continue // gone, or dead and waiting to be reaped
				}
				found = append(found, p)
				queue = append(queue, child)
				fresh++
			}
		}
		if fresh == 0 && pass > 0 {
			return found, nil
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
	for _, tid := range tids {
		data, err := os.ReadFile(childrenPath(pid, tid))
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

// scanAll reads every /proc/PID/stat and returns the descendants of root.
func scanAll(root int) ([]process, error) {
	pids, err := listPIDs(procRoot)
	if err != nil {
		return nil, err
	}
	byParent := map[int][]process{}
	for _, pid := range pids {
		p, err := readProcess(pid)
		if err != nil || p.State == 'Z' {
			continue
		}
		byParent[p.PPID] = append(byParent[p.PPID], p)
	}
	var found []process
	queue := []int{root}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		for _, p := range byParent[pid] {
			found = append(found, p)
			queue = append(queue, p.PID)
		}
	}
	return found, nil
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
