package supervisor

import (
	"os"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/reaper-init/reaper/reaper/cgroup"
)

// spareThreads is how many idle OS threads reaper makes the Go runtime keep
// for later. The runtime starts a thread whenever it wants one more than it
// has idle, and treats a failed clone as fatal ("newosproc"). reaper shares
// its pids.max with COMMAND's tree, as PID 1 of a container or in the
// cgroup it was started in, so a tree that fills pids.max would crash it
// just when it has most to do: reaping, forwarding and tearing the tree
// down. The runtime never ends an idle thread, so threads made before
// COMMAND starts stay available, at the price of about 30 KiB of RSS and
// one slot of pids.max each: under a pids.max with little room left,
// reaper starts fewer (see sparesFor), or it would die starting them.
//
// A limit is what makes them needed: where neither pids.max (in the
// cgroup2 tree or a v1 pids hierarchy, in reaper's group or above) nor, for
// a user other than root, RLIMIT_NPROC bounds reaper's tasks, no tree can
// leave reaper without a thread, and reaper starts none (they cost about a
// millisecond at start and exit).
//
// Measured with a fork bomb that fills pids.max while strace slows every
// system call of reaper's (which makes the runtime want more threads),
// counting thread clones after COMMAND's: with no spares there were some in
// 12 runs of 30, with 4 in 2 of 40, with 6 in none of 50, and on cores
// oversubscribed four times over, with 6 in 1 of 20 and with 8 in 1 of 120.
const spareThreads = 8

// plannedSpares returns how many spare threads to start, and the room
// pids.max leaves (-1 when no limit applies).
func plannedSpares(f cgroup.Files) (n, room int) {
	room, limited := f.PidsRoom()
	switch {
	case limited:
		return sparesFor(room), room
	case processLimited():
		return spareThreads, -1
	}
	return 0, -1
}

// processLimited reports whether RLIMIT_NPROC bounds the tasks of reaper's
// user (root's are not: it may go past the limit).
func processLimited() bool {
	var lim unix.Rlimit
	return os.Geteuid() != 0 && unix.Getrlimit(unix.RLIMIT_NPROC, &lim) == nil && lim.Cur != unix.RLIM_INFINITY
}

// sparesFor returns how many spare threads to start when the pids
// controller leaves room for room more tasks: at most half of what is left
// after a few for the runtime's own, so that COMMAND can still start.
func sparesFor(room int) int {
	return min(spareThreads, max(0, (room-4)/2))
}

// reserveThreads makes the runtime start n threads and leave them idle: n
// goroutines lock themselves to threads of their own at the same time, then
// unlock and end, which returns their threads to the runtime's idle list
// instead of ending them. The returned channel is closed once all n threads
// exist and are released (on their way to the idle list); the work runs
// meanwhile on other threads.
func reserveThreads(n int) <-chan struct{} {
	reserved := make(chan struct{})
	go func() {
		defer close(reserved)
		var locked, unlocked sync.WaitGroup
		release := make(chan struct{})
		locked.Add(n)
		unlocked.Add(n)
		for range n {
			go func() {
				runtime.LockOSThread()
				locked.Done()
				<-release
				runtime.UnlockOSThread()
				unlocked.Done()
			}()
		}
		locked.Wait()
		close(release)
		unlocked.Wait()
	}()
	return reserved
}
