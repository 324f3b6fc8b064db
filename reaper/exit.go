package reaper

import (
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/reaper-init/reaper/signals"
)

// Exit is how reaper ends: with an exit code or, when COMMAND died of a
// signal and reaper is not PID 1, by dying of the same signal, so that its
// caller sees what it would have seen without reaper (a shell's $? is
// still 128+N, and systemd records a signal death: Result=success for a
// SIGTERM stop, with no SuccessExitStatus=143).
type Exit struct {
	Code   int            // 128+Signal when Signal is set
	Signal syscall.Signal // the signal to die of, or 0
}

// Code returns the Exit of exit code n.
func Code(n int) Exit { return Exit{Code: n} }

// Do ends the process as e says. PID 1 cannot die of a signal it sends
// itself: Run never asks it to.
func (e Exit) Do() {
	if e.Signal != 0 {
		dieOf(e.Signal)
	}
	os.Exit(e.Code)
}

// dieOf ends the process with sig, without a core dump (it is COMMAND's
// death, not reaper's), and exits 128+sig should sig not end it.
func dieOf(sig syscall.Signal) {
	unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0) // no core, and no core dump handler run
	// SIG_DFL: a struct sigaction of zeros, whatever the architecture's
	// layout (handler 0 is SIG_DFL, no flags, an empty mask). The Go
	// runtime's handler would turn some signals into a crash report.
	var dfl [8]uint64
	unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(sig), uintptr(unsafe.Pointer(&dfl)), 0, signals.KernelSigsetSize, 0, 0)
	set := signals.Sigset(sig)
	unix.PthreadSigmask(unix.SIG_UNBLOCK, &set, nil)
	unix.Tgkill(os.Getpid(), unix.Gettid(), sig)
	os.Exit(128 + int(sig))
}
