package logs

import (
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/reaper-init/reaper/signals"
)

// FD writes to a file descriptor with write(2), and never raises SIGPIPE:
// a write to a pipe whose reader is gone makes the kernel send SIGPIPE to
// the writing thread, and reaper catches SIGPIPE to forward it, so the
// signal its own log line raised would reach COMMAND. FD blocks SIGPIPE on
// the writing thread for the write and takes back the SIGPIPE a failed
// write left pending there; a SIGPIPE sent to the process from outside is
// not touched. (The os package would also re-raise SIGPIPE itself for
// descriptors 1 and 2.)
type FD int

var sigpipe = func() *unix.Sigset_t {
	set := signals.Sigset(unix.SIGPIPE)
	return &set
}()

// Write writes p with one write(2).
func (fd FD) Write(p []byte) (int, error) {
	runtime.LockOSThread() // the mask, the write and the pending signal belong to one thread
	defer runtime.UnlockOSThread()
	var old unix.Sigset_t
	unix.PthreadSigmask(unix.SIG_BLOCK, sigpipe, &old)
	n, err := unix.Write(int(fd), p)
	if err == unix.EPIPE {
		// The kernel queued SIGPIPE on this thread: take it back. A
		// thread-directed signal is dequeued before a process-wide one.
		var zero unix.Timespec
		unix.Syscall6(unix.SYS_RT_SIGTIMEDWAIT, uintptr(unsafe.Pointer(sigpipe)), 0,
			uintptr(unsafe.Pointer(&zero)), signals.KernelSigsetSize, 0, 0)
	}
	unix.PthreadSigmask(unix.SIG_SETMASK, &old, nil)
	return n, err
}
