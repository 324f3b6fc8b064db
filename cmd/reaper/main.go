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
)

func main() {
	ensurePreemptOff()
	os.Exit(entryPoint(os.Args[0])(os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr))
}

// run parses the command line and the environment, then hands over to the
// supervisor. It returns the process exit code.
func run(args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) int {
	cfg, action, err := parse(args, lookupEnv)
	switch {
	case err != nil:
		fmt.Fprintf(stderr, "reaper: %v (see 'reaper --help')\n", err)
		return reaper.ExitUsage
	case action == showHelp:
		printHelp(stdout)
		return 0
	case action == showVersion:
		fmt.Fprintf(stdout, "reaper version %s\n", version)
		return 0
	}
	cfg.Stderr = stderr
	return reaper.Run(cfg)
}
