package reaper

import (
	"bufio"
	"bytes"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// notify is signal.Notify; a variable so that nothing else in the package
// calls os/signal.
var notify = signal.Notify

// Signals raised by reaper's own actions. A write to a pipe whose reader is
// gone raises SIGPIPE, and a write to (or a foreground change of) a terminal
// by a background process raises SIGTTOU. reaper catches both to forward
// them, so it would take its own for ones sent from outside, and the
// terminal driver would repeat a SIGTTOU-interrupted call for ever. So logs
// go to the raw descriptor (see rawWriter: the os package would re-raise
// SIGPIPE itself for fds 1 and 2), and the thread that writes them and
// handles the terminal, the event loop's, keeps both blocked: the kernel's
// thread-directed SIGPIPE then stays pending there, the terminal driver lets
// a thread that blocks SIGTTOU go ahead, and the same signals sent to the
// process from outside are delivered to another thread and forwarded as
// usual.

var threadSignals = func() *unix.Sigset_t {
	var set unix.Sigset_t
	for _, sig := range []syscall.Signal{syscall.SIGPIPE, syscall.SIGTTOU} {
		set.Val[(sig-1)/64] |= 1 << ((sig - 1) % 64)
	}
	return &set
}()

// blockThreadSignals blocks SIGPIPE and SIGTTOU on the calling thread,
// which must be locked to its goroutine, and returns the mask the thread had
// before.
func blockThreadSignals() unix.Sigset_t {
	var old unix.Sigset_t
	unix.PthreadSigmask(unix.SIG_BLOCK, threadSignals, &old)
	return old
}

// restoreThreadSignals gives the calling thread the mask it had before
// blockThreadSignals, after discarding what reaper's own writes left pending
// there: the forking thread's mask becomes the child's, and COMMAND must
// start with exactly its caller's (a SIGPIPE the caller blocked stays
// blocked).
func restoreThreadSignals(mask unix.Sigset_t) {
	var ours unix.Sigset_t // the signals blockThreadSignals blocked itself
	for i := range ours.Val {
		ours.Val[i] = threadSignals.Val[i] &^ mask.Val[i]
	}
	var zero unix.Timespec
	for {
		_, _, errno := unix.Syscall6(unix.SYS_RT_SIGTIMEDWAIT, uintptr(unsafe.Pointer(&ours)), 0,
			uintptr(unsafe.Pointer(&zero)), unsafe.Sizeof(ours), 0, 0)
		if errno != 0 && errno != unix.EINTR {
			break // EAGAIN: nothing (more) pending
		}
	}
	unix.PthreadSigmask(unix.SIG_SETMASK, &mask, nil)
}

// rawWriter writes to a file descriptor with write(2) and nothing else.
type rawWriter int

func (fd rawWriter) Write(p []byte) (int, error) {
	return unix.Write(int(fd), p)
}

// inheritedIgnored returns the signals whose disposition is SIG_IGN right
// now, from SigIgn in /proc/self/status. Read at start-up, before reaper
// installs handlers of its own, it tells which signals reaper's caller left
// ignored, where the Go runtime kept them so: SIGHUP and SIGINT (as
// signal.Ignored also reports), and the job-control signals SIGTSTP, SIGTTIN,
// SIGTTOU and SIGCONT, for which the runtime installs no handler of its own.
// For the other signals the runtime has already replaced an inherited
// SIG_IGN with its handler before any Go code runs; nothing can recover it.
func inheritedIgnored() map[syscall.Signal]bool {
	data, err := os.ReadFile(procRoot + "/self/status")
	if err != nil {
		return nil
	}
	mask, ok := statusMask(data, "SigIgn:")
	if !ok {
		return nil
	}
	ignored := map[syscall.Signal]bool{}
	for sig := syscall.Signal(1); sig <= 64; sig++ {
		if mask&(1<<(sig-1)) != 0 {
			ignored[sig] = true
		}
	}
	return ignored
}

// statusMask reads a hexadecimal signal mask line such as "SigIgn:
// 0000000000001000" from /proc/PID/status.
func statusMask(status []byte, key string) (uint64, bool) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.HasPrefix(line, []byte(key)) {
			continue
		}
		v, err := strconv.ParseUint(string(bytes.TrimSpace(line[len(key):])), 16, 64)
		return v, err == nil
	}
	return 0, false
}
