// Package exitcode holds the exit codes reaper uses for itself, and how a
// wait status of COMMAND's reads and becomes reaper's exit code. Otherwise
// reaper exits with COMMAND's status: N when COMMAND exits with N, 128+S
// when a signal S kills it.
package exitcode

import (
	"fmt"

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
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// Describe renders a wait status as "exit 3" or "signal SIGKILL".
func Describe(ws unix.WaitStatus) string {
	switch {
	case ws.Exited():
		return fmt.Sprintf("exit %d", ws.ExitStatus())
	case ws.Signaled() && ws.CoreDump():
		return "signal " + signals.Name(ws.Signal()) + " (core dumped)"
	case ws.Signaled():
		return "signal " + signals.Name(ws.Signal())
	}
	return fmt.Sprintf("status %#x", uint32(ws))
}
