// Command reaper is a small init and process reaper for Linux:
//
//	reaper [flags] [--] COMMAND [ARGS...]
//
// It runs COMMAND as the leader of its own process group, forwards the
// signals it receives, reaps every zombie reparented to it and, before it
// exits with COMMAND's status, tears down every descendant that is left.
// See reaper --help and README.md.

// reaper sits mostly idle with one busy goroutine: it needs no GOMAXPROCS
// derived from cgroup CPU limits (read at start-up) nor its periodic
// re-reading (a wake-up every second).
//
//go:debug containermaxprocs=0
//go:debug updatemaxprocs=0
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/reaper-init/reaper/reaper"
	"github.com/reaper-init/reaper/reaper/logs"
)

func main() {
	reaper.Trampoline() // returns unless this process is the one that starts COMMAND
	reaper.Guardian()   // returns unless this process is a run's guardian
	ensurePreemptOff()
	caught = reaper.CatchSignals() // while the command line is read
	entryPoint(os.Args[0])(os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr).Do()
}

// run parses the command line and the environment, then hands over to the
// supervisor. It returns how reaper ends.
func run(args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) reaper.Exit {
	cfg, action, err := parse(args, lookupEnv)
	switch {
	case err != nil:
		fmt.Fprintf(stderr, "reaper: %s (see 'reaper --help')\n", logs.Escape(err.Error()))
		return reaper.Code(reaper.ExitUsage)
	case action == showHelp:
		printHelp(stdout)
		return reaper.Code(0)
	case action == showVersion:
		fmt.Fprintln(stdout, versionLine())
		return reaper.Code(0)
	}
	cfg.Stderr, cfg.Signals = stderr, caught
	return reaper.Run(cfg)
}

// caught are the signals reaper catches from the start of main.
var caught *reaper.Signals
