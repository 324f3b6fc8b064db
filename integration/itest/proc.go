package itest

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// ChildrenOf lists the children of every thread of pid.
func ChildrenOf(pid int) []int {
	var kids []int
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, task := range tasks {
		data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, task.Name()))
		for _, f := range strings.Fields(string(data)) {
			if kid, err := strconv.Atoi(f); err == nil {
				kids = append(kids, kid)
			}
		}
	}
	return kids
}

// StatFields returns the fields of /proc/PID/stat after the command name
// (field 3, the state, first), or nil when pid is gone.
func StatFields(pid int) []string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(data[i+1:]))
}

// ProcState returns the state letter of pid from /proc/PID/stat, or 0.
func ProcState(pid int) byte {
	if f := StatFields(pid); len(f) > 0 {
		return f[0][0]
	}
	return 0
}

// StartTime returns field 22 of /proc/PID/stat, "" when pid is gone.
func StartTime(pid int) string {
	if f := StatFields(pid); len(f) > 19 {
		return f[19]
	}
	return ""
}

// InnermostPID returns pid's number in its own PID namespace (the last
// NSpid entry of /proc/PID/status), and whether that namespace is nested
// below the one of the /proc it was read from.
func InnermostPID(pid int) (int, bool) {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "NSpid:" {
			ns, err := strconv.Atoi(f[len(f)-1])
			if err != nil {
				return 0, false
			}
			return ns, len(f) > 2
		}
	}
	return 0, false
}

// FirstBelow returns the first process, root or below it, breadth first,
// for which match is true, or 0.
func FirstBelow(root int, match func(pid int) bool) int {
	queue := []int{root}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		if match(pid) {
			return pid
		}
		queue = append(queue, ChildrenOf(pid)...)
	}
	return 0
}

// AllPIDs lists the processes in /proc.
func AllPIDs() []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// ProcStatus returns the named fields of /proc/PID/status, summed over the
// process's threads when perThread.
func ProcStatus(pid int, perThread bool, keys ...string) map[string]int {
	out := map[string]int{}
	files := []string{fmt.Sprintf("/proc/%d/status", pid)}
	if perThread {
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		files = nil
		for _, t := range tasks {
			files = append(files, fmt.Sprintf("/proc/%d/task/%s/status", pid, t.Name()))
		}
	}
	for _, f := range files {
		data, _ := os.ReadFile(f)
		for _, line := range strings.Split(string(data), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if !ok || !slices.Contains(keys, k) {
				continue
			}
			n, _ := strconv.Atoi(strings.Fields(v)[0])
			out[k] += n
		}
	}
	return out
}

// ZombiesOf counts the zombie children of pid's main thread (where a
// subreaper's orphans go; every shim here forks from its main thread).
func ZombiesOf(pid int) int {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	z := 0
	for _, f := range strings.Fields(string(data)) {
		kid, _ := strconv.Atoi(f)
		if ProcState(kid) == 'Z' {
			z++
		}
	}
	return z
}

// Pidfds opens a pidfd on each pid, closed when the test ends.
func Pidfds(t testing.TB, pids []int) []int {
	t.Helper()
	return PidfdsUntil(t, t, pids)
}

// Cleaner is what ends with a test: a test, or the parent of the subtest
// that makes it.
type Cleaner interface{ Cleanup(func()) }

// PidfdsUntil opens a pidfd on each pid, closed when owner ends.
func PidfdsUntil(t testing.TB, owner Cleaner, pids []int) []int {
	t.Helper()
	var fds []int
	for _, pid := range pids {
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			t.Fatalf("pidfd_open(%d): %v", pid, err)
		}
		owner.Cleanup(func() { unix.Close(fd) })
		fds = append(fds, fd)
	}
	return fds
}

// Running lists the pids whose pidfds say they have not exited.
func Running(fds []int, pids []int) []int {
	var alive []int
	for i, fd := range fds {
		p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(p, 0)
		for errors.Is(err, unix.EINTR) { // not an exit: ask again
			n, err = unix.Poll(p, 0)
		}
		if n == 0 {
			alive = append(alive, pids[i])
		}
	}
	return alive
}

// AllExit waits until every pidfd is readable (its process gone), or
// timeout passes; it reports whether all are gone.
func AllExit(fds []int, timeout time.Duration) bool {
	end := time.Now().Add(timeout)
	for _, fd := range fds {
		for {
			left := time.Until(end)
			if left <= 0 {
				return false
			}
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			n, err := unix.Poll(pfd, int(left.Milliseconds())+1)
			if n > 0 {
				break
			}
			if err != nil && !errors.Is(err, unix.EINTR) {
				return false
			}
		}
	}
	return true
}

// AwaitGone waits until every pid's pidfd says it exited, failing the test
// at the deadline with those still running.
func AwaitGone(t *testing.T, fds, pids []int) {
	t.Helper()
	end := time.Now().Add(Deadline)
	for {
		alive := Running(fds, pids)
		if len(alive) == 0 {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("still running %v after the deadline", alive)
		}
		polls := make([]unix.PollFd, len(fds))
		for i, fd := range fds {
			polls[i] = unix.PollFd{Fd: int32(fd), Events: unix.POLLIN}
		}
		unix.Poll(polls, 100)
	}
}
