// Package reaper is the supervisor behind the reaper command, for programs
// that embed it: Run starts COMMAND in a process group of its own, forwards
// signals to it, reaps every zombie that comes its way and, before it
// returns, tears down every descendant; Exit says how the process must
// end. A main that embeds it calls, in this order:
//
//	reaper.Trampoline()            // first: this process may be COMMAND's start
//	reaper.Guardian()              // or a run's guardian
//	sigs := reaper.CatchSignals()  // then, before anything slow
//	cfg := reaper.Config{Command: args, Signals: sigs}
//	reaper.Run(cfg).Do()           // on the main goroutine
package reaper

import (
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/reaper-init/reaper/reaper/exitcode"
	"github.com/reaper-init/reaper/reaper/guardian"
	"github.com/reaper-init/reaper/reaper/internal/supervisor"
	"github.com/reaper-init/reaper/reaper/logs"
	"github.com/reaper-init/reaper/reaper/record"
	"github.com/reaper-init/reaper/reaper/spawn"
	"github.com/reaper-init/reaper/reaper/stop"
	"github.com/reaper-init/reaper/signals"
)

// Exit codes reaper itself uses. Otherwise it exits with COMMAND's status:
// N when COMMAND exits with N, 128+S when a signal S kills it.
const (
	ExitUsage      = exitcode.Usage      // bad flag, bad value, no COMMAND, a live instance
	ExitLeftovers  = exitcode.Leftovers  // --leftovers=fail: COMMAND exited 0 but left processes
	ExitTimeout    = exitcode.Timeout    // --timeout expired (as timeout(1))
	ExitInternal   = exitcode.Internal   // reaper could not do its own work (fork failed)
	ExitCannotExec = exitcode.CannotExec // COMMAND found but could not be executed
	ExitNotFound   = exitcode.NotFound   // COMMAND not found
)

// GraceAuto is Config.Grace's "as the manager allows" (see Config.Grace).
const GraceAuto = supervisor.GraceAuto

// DefaultGrace is the grace period where nobody gives one.
const DefaultGrace = stop.DefaultGrace

// Kill modes (--kill-mode).
const (
	KillModeMixed        = supervisor.KillModeMixed        // COMMAND first, the others once it has exited
	KillModeControlGroup = supervisor.KillModeControlGroup // every descendant at once
)

// What to do with what COMMAND leaves (--leftovers).
const (
	LeftoversStop = supervisor.LeftoversStop // stop it
	LeftoversFail = supervisor.LeftoversFail // stop it, and fail a run whose COMMAND exited 0
)

// Guardian modes (--guardian).
const (
	GuardianAuto = supervisor.GuardianAuto // a guardian unless reaper is PID 1
	GuardianOff  = supervisor.GuardianOff  // none
)

// Cgroup modes (--cgroup).
const (
	CgroupAuto = supervisor.CgroupAuto // contain COMMAND in a cgroup when possible
	CgroupOn   = supervisor.CgroupOn   // contain COMMAND in a cgroup, or fail
	CgroupOff  = supervisor.CgroupOff  // walk /proc only
)

// Log formats (--log-format).
const (
	LogConsole = logs.Console
	LogJSON    = logs.JSON
)

// Config is everything Run needs. The zero value of each field is a usable
// default except Command, which must not be empty, and Grace, whose zero
// kills at once (the command line's default is GraceAuto).
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

	// StopSignal is sent to the descendants when a stop begins (default
	// SIGTERM).
	StopSignal syscall.Signal
	// Grace is how long a stop waits for descendants to exit before
	// SIGKILL, one deadline for the whole stop; zero kills at once.
	// GraceAuto gives a stop request as long as the manager that asked for
	// it allows (a systemd unit's stop timeout, less a margin; as PID 1 no
	// deadline of reaper's own, the engine's SIGKILL ending the namespace)
	// and DefaultGrace elsewhere, and what is left once COMMAND has exited
	// on its own DefaultGrace.
	Grace time.Duration
	// KillMode says who a stop request reaches first: KillModeMixed (the
	// default: COMMAND, then the others once it has exited, as systemd's
	// KillMode=mixed) or KillModeControlGroup (every descendant at once).
	KillMode string
	// Timeout, when positive, stops everything that long after COMMAND
	// started; reaper then exits with ExitTimeout.
	Timeout time.Duration
	// Wait makes reaper wait for the remaining descendants to exit on their
	// own after COMMAND exits, instead of stopping them.
	Wait bool
	// ReportPath, when set, receives a JSON account of the run's end.
	ReportPath string
	// StepSummary, when set, is a Markdown file (GitHub Actions'
	// $GITHUB_STEP_SUMMARY) to which a table of the processes COMMAND left
	// is appended, when it left any.
	StepSummary string
	// Leftovers is LeftoversStop (the default: processes left once COMMAND
	// has exited are stopped) or LeftoversFail (they are stopped, and a
	// COMMAND that exited 0 makes reaper exit ExitLeftovers).
	Leftovers string

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
	// Guardian is GuardianAuto (the default: a guardian unless reaper is
	// PID 1) or GuardianOff. A guardian stops what the run left should
	// reaper die before its teardown ends (see package guardian).
	Guardian string
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

// Run starts cfg.Command, supervises it until it and every other descendant
// are gone, and returns how reaper should end. Call it once per process,
// from main, and end with the Exit's Do, on the same goroutine: Run makes
// the process a child subreaper, catches every signal it forwards, and
// locks the calling goroutine to its OS thread for good, because COMMAND's
// parent-death signal fires when the thread that forked it exits, not the
// process. A Config whose LogFormat is unknown gives ExitUsage at once.
func Run(cfg Config) Exit {
	return Exit(supervisor.Run(supervisor.Config(withDefaults(cfg))))
}

// withDefaults fills in what cfg leaves at its zero value.
func withDefaults(cfg Config) Config {
	if cfg.Signals == nil {
		cfg.Signals = CatchSignals()
	}
	if cfg.Stderr == nil || cfg.Stderr == os.Stderr {
		cfg.Stderr = logs.FD(2)
	}
	if cfg.StopSignal == 0 {
		cfg.StopSignal = syscall.SIGTERM
	}
	if cfg.Policy.StopOn == nil {
		cfg.Policy.StopOn = []syscall.Signal{syscall.SIGTERM}
		if cfg.StopSignal != syscall.SIGTERM {
			cfg.Policy.StopOn = append(cfg.Policy.StopOn, cfg.StopSignal)
		}
	}
	if cfg.ReportPath != "" {
		// reaper leaves the caller's directory once COMMAND runs.
		if abs, err := filepath.Abs(cfg.ReportPath); err == nil {
			cfg.ReportPath = abs
		}
	}
	if cfg.Cgroup == "" {
		cfg.Cgroup = CgroupAuto
	}
	return cfg
}

// Signals are the signals reaper catches: make them with CatchSignals,
// first thing in main, and give them to Run in Config.Signals.
type Signals = supervisor.Signals

// CatchSignals starts catching SIGCHLD and every signal reaper forwards
// (PID 1 gets no signal it has no handler for), on a goroutine of its own
// while the rest of start-up runs: until Run starts COMMAND, what comes is
// kept for it. A signal reaper's caller left ignored stays ignored, for
// reaper and for COMMAND, and is not forwarded.
func CatchSignals() *Signals { return supervisor.CatchSignals() }

// Trampoline starts COMMAND in place of this process when reaper made it
// for that (a variable of COMMAND's must name COMMAND's own pid:
// LISTEN_PID, WATCHDOG_PID), and returns at once otherwise. Call it first
// in main.
func Trampoline() { spawn.Trampoline() }

// Guardian runs the guardian of a run when reaper started this process as
// one (see package guardian): it returns only when this process is not a
// guardian. Call it first in main, beside Trampoline.
func Guardian() { guardian.Run() }

// StartError says why COMMAND could not be started, and with which exit
// code (ExitNotFound, ExitCannotExec or ExitInternal) reaper reports it.
type StartError = spawn.StartError

// Report is what --report (Config.ReportPath) writes, as JSON: how COMMAND
// ended, and what the stop did to every descendant. See package record for
// each field.
type Report = record.Report

// CommandStatus is COMMAND's wait status in a Report.
type CommandStatus = record.CommandStatus

// TeardownReport describes one stop in a Report.
type TeardownReport = record.TeardownReport

// DescendantReport is one process a stop found, in a TeardownReport.
type DescendantReport = record.DescendantReport
