package main

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/reaper-init/reaper/reaper"
)

// printHelp writes --help: usage, every flag with its variable, and the exit
// codes.
func printHelp(w io.Writer) {
	fmt.Fprint(w, `Usage: reaper [flags] [--] COMMAND [ARGS...]

Runs COMMAND as the leader of its own process group, forwards the signals it
receives, reaps every zombie reparented to it and, before it exits with
COMMAND's status, stops every descendant still running.

A stop request (SIGTERM: docker stop, systemctl stop; the --stop-signal; or
what --stop-on names) goes to COMMAND first; the other descendants get the
stop signal once COMMAND has exited (or three quarters into the deadline),
and SIGKILL 5s later (--grace), or at the deadline if that comes first:
the systemd unit's stop timeout less a margin, none as PID 1 (the engine's
SIGKILL), else 5s, or --grace. When COMMAND exits on
its own, what is left gets the stop signal at once and SIGKILL 5s later
(--grace).

Signals: every signal reaper receives is forwarded to COMMAND alone (after
--rewrite; --forward=group: to its process group), and that is all: SIGHUP
(a reload), SIGINT (but under GitHub Actions, GITHUB_ACTIONS=true, unless
--stop-on is given), SIGQUIT (a thread dump), SIGUSR1 and the others never
stop anything. It is the signal received that counts: with
--rewrite=TERM:QUIT, SIGTERM still stops, and COMMAND gets SIGQUIT. A
second stop request during a stop SIGKILLs at once.

Flags (each may also come from the variable shown; a flag wins):
`)
	var cfg = defaults()
	var act action
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, o := range options(&cfg, &act) {
		if o.usage == "" {
			continue // an alias, listed with its main flag
		}
		flagText := "--" + o.name
		if len(o.name) == 1 {
			flagText = "-" + o.name
		}
		if o.arg != "" {
			flagText += "=" + o.arg
		}
		env := ""
		if !o.cliOnly {
			env = o.envName()
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", flagText, env, o.usage)
	}
	tw.Flush()
	fmt.Fprintf(w, `
Durations are Go durations (250ms, 5s, 1m30s) or plain seconds (2.5).
Signals are names or numbers: TERM, SIGTERM, term, 15, RTMIN+2.
List variables separate values with commas: REAPER_REWRITE=TERM:QUIT,HUP:0.

Exit codes:
  N     COMMAND exited with N (0 when listed in --success-exit)
  128+S COMMAND was killed by signal S (143 for SIGTERM, 137 for SIGKILL):
        reaper dies of S too (a shell shows 128+S), or exits 128+S as PID 1;
        likewise when stop signal S came before COMMAND started
  %-5d usage error: unknown flag, bad value, unknown signal, no COMMAND;
        also a live reaper holds the --instance (and --replace cannot stop
        it), or a --wait-port stays held
  %-5d --leftovers=fail: COMMAND exited 0 but left processes that had to be
        stopped
  %-5d --timeout expired
  %-5d reaper could not do its own work: fork failed, --cgroup=on impossible,
        instance lock not taken, or COMMAND survived SIGKILL
  %-5d COMMAND found but not executable, or not reachable (a directory
        on its path that may not be searched), or exec failed
  %-5d COMMAND not found
`, reaper.ExitUsage, reaper.ExitLeftovers, reaper.ExitTimeout, reaper.ExitInternal, reaper.ExitCannotExec, reaper.ExitNotFound)
}
