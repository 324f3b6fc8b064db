package reaper

import (
	"runtime"
	"sync"
)

// spareThreads is how many idle OS threads reaper makes the Go runtime keep
// for later. The runtime starts a thread whenever it wants one more than it
// has idle, and treats a failed clone as fatal ("newosproc"). reaper shares
// its pids.max with COMMAND's tree, as PID 1 of a container or in the
// cgroup it was started in, so a tree that fills pids.max would crash it
// just when it has most to do: reaping, forwarding and tearing the tree
// down. The runtime never ends an idle thread, so threads made before
// COMMAND starts stay available. Measured with TestNoNewThreadOnceCommandRuns
// (a fork bomb fills pids.max while strace slows every system call): with
// no spares the runtime started a thread after COMMAND in 12 runs of 30,
// with 4 in 2 of 40, with 6 in none of 50 but in 1 of 20 on oversubscribed
// cores, with 8 in 1 of 120 on oversubscribed cores. Each costs about 30
// KiB of RSS.
const spareThreads = 8

// reserveThreads makes the runtime start n threads and leave them idle: n
// goroutines lock themselves to threads of their own at the same time, then
// unlock and end, which returns their threads to the runtime's idle list
// instead of ending them. The returned channel is closed when all n are
// idle; the work runs meanwhile on other threads.
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
