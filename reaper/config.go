// Package reaper is the supervisor behind the reaper command: it starts
// COMMAND in a process group of its own, forwards signals to it, reaps every
// zombie that comes its way and, before it returns, tears down every
// descendant. One goroutine, locked to one OS thread, owns all process
// state; see Run.
package reaper

import (
	"io"
	"syscall"
	"time"

	"github.com/reaper-init/reaper/reaper/logs"
	"github.com/reaper-init/reaper/signals"
)

// Exit codes reaper itself uses. Otherwise it exits with COMMAND's status:
// N when COMMAND exits with N, 128+S when a signal S kills it.
const (
	ExitUsage      = 2   // bad flag, bad value, no COMMAND
	ExitTimeout    = 124 // --timeout expired (as timeout(1))
	ExitInternal   = 125 // reaper could not do its own work (fork failed)
	ExitCannotExec = 126 // COMMAND found but could not be executed
	ExitNotFound   = 127 // COMMAND not found
)

// Cgroup modes (--cgroup).
const (
	CgroupAuto = "auto" // contain COMMAND in a cgroup when possible
	CgroupOn   = "on"   // contain COMMAND in a cgroup, or fail
	CgroupOff  = "off"  // walk /proc only
)

// Log formats (--log-format).
const (
	LogConsole = logs.Console
	LogJSON    = logs.JSON
)

// Config is everything Run needs. The zero value of each field is a usable
// default except Command, which must not be empty.
type Config struct {
	// Command is COMMAND and its arguments; Command[0] is looked up on PATH.
	Command []string
	// Policy decides where forwarded signals go and how they are rewritten.
	Policy signals.Policy
	// SuccessExit lists statuses of COMMAND (N, or 128+S for signal S)
	// that reaper turns into exit code 0.
	SuccessExit []int
	// PdeathSignal is sent to COMMAND by the kernel when reaper dies
	// (0: none).
	PdeathSignal syscall.Signal

	// StopSignal is sent to every descendant when a stop begins
	// (default SIGTERM).
	StopSignal syscall.Signal
	// Grace is how long a stop waits for descendants to exit before
	// SIGKILL; zero kills at once. One deadline for the whole stop.
	Grace time.Duration
	// Timeout, when positive, stops everything that long after COMMAND
	// started; reaper then exits with ExitTimeout.
	Timeout time.Duration
	// Wait makes reaper wait for the remaining descendants to exit on their
	// own after COMMAND exits, instead of stopping them.
	Wait bool
	// ReportPath, when set, receives a JSON account of the run's end.
	ReportPath string

	// Instance names the run. A named instance is locked for reaper's life
	// (a second live reaper of the name refuses to start), the previous
	// run's leftovers are swept before COMMAND starts, and its cgroup is
	// named after it. Empty: a name unique to the run, no lock and no
	// sweep. COMMAND gets it in instance.Var either way, with the run's
	// token when named.
	Instance string
	// Replace stops a live reaper of the same instance, instead of refusing
	// to start.
	Replace bool
	// Cgroup is CgroupAuto (the default), CgroupOn or CgroupOff.
	Cgroup string
	// WaitPorts are TCP ports nobody may listen on when COMMAND starts.
	WaitPorts []int
	// WaitPortTimeout bounds the wait for WaitPorts (0: no wait at all;
	// the command line's default is 10s).
	WaitPortTimeout time.Duration

	// DropEnv names the variables of reaper's environment COMMAND does not
	// get: reaper's own configuration (REAPER_GRACE and the others), which
	// would otherwise configure a reaper started below this one.
	DropEnv []string

	// LogFormat is LogConsole or LogJSON.
	LogFormat string
	// Verbosity 0 logs warnings and errors, 1 adds info, 2 adds debug.
	Verbosity int
	// Signals are the signals caught since main began (CatchSignals); nil:
	// Run starts catching them itself.
	Signals *Signals

	// Stderr receives the logs (default os.Stderr).
	Stderr io.Writer
}
