// Package exitcode holds the exit codes reaper uses for itself, and how a
// wait status of COMMAND's reads and becomes reaper's exit code. Otherwise
// reaper exits with COMMAND's status: N when COMMAND exits with N, 128+S
// when a signal S kills it.
package exitcode

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/reaper-init/reaper/signals"
)

// Reaper's own exit codes.
const (
	Usage      = 2   // bad flag, bad value, no COMMAND, a live instance
	Leftovers  = 123 // --leftovers=fail: COMMAND exited 0 but left processes that had to be stopped
	Timeout    = 124 // --timeout expired (as timeout(1))
	Internal   = 125 // reaper could not do its own work (fork failed)
	CannotExec = 126 // COMMAND found but could not be executed
	NotFound   = 127 // COMMAND not found
)

// Of returns the exit code a shell reports for a process that ended with
// ws: its exit code, or 128+S when signal S killed it.
func Of(ws unix.WaitStatus) int {
	if sig := Signal(ws); sig != 0 {
		return 128 + int(sig)
	}
	return ws.ExitStatus()
}

// Signal returns the signal that killed the process that ended with ws, or
// 0 when it exited. On mips, where signals go up to 127, a death by signal
// 127 puts 0x7f, the mark of a stop, in the status's low bits, with no
// stop signal: wait4 reports it all the same, and the process is gone.
func Signal(ws unix.WaitStatus) syscall.Signal {
	switch {
	case ws.Signaled():
		return ws.Signal()
	case ws&0x7f == 0x7f && !Stopped(ws) && !ws.Continued():
		return 0x7f
	}
	return 0
}

// Stopped reports whether ws tells of a stop (wait4's WUNTRACED), not of
// mips's death by signal 127 (see Signal).
func Stopped(ws unix.WaitStatus) bool { return ws.Stopped() && ws.StopSignal() != 0 }

// Describe renders a wait status as "exit 3" or "signal SIGKILL".
func Describe(ws unix.WaitStatus) string {
	sig := Signal(ws)
	switch {
	case ws.Exited():
		return fmt.Sprintf("exit %d", ws.ExitStatus())
	case sig != 0 && ws.CoreDump():
		return "signal " + signals.Name(sig) + " (core dumped)"
	case sig != 0:
		return "signal " + signals.Name(sig)
	}
	return fmt.Sprintf("status %#x", uint32(ws))
}
