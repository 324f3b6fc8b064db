package main

// reaper as a drop-in for tini: `docker run --init` starts
// `/sbin/docker-init -- COMMAND`, `podman run --init` starts
// `/run/podman-init -- COMMAND`, and images call `tini -s -g -- COMMAND`.
// Invoked under one of those names, reaper reads tini's command line and gives
// it tini's meaning on top of its own behaviour: everything left below it is
// still stopped before it exits.

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/reaper-init/reaper/reaper"
	"github.com/reaper-init/reaper/reaper/logs"
	"github.com/reaper-init/reaper/signals"
)

// tiniNames are the base names of argv[0] under which reaper reads tini's
// command line.
var tiniNames = map[string]bool{
	"tini":        true,
	"tini-static": true,
	"docker-init": true, // docker run --init, dockerd --init-path
	"podman-init": true, // podman run --init, init_path in containers.conf
}

// tiniVersion is the tini release whose command line reaper accepts. dockerd
// reads `docker-init --version` for `docker info`, expecting tini's format.
const tiniVersion = "0.19.0"

// mainFunc is a front end: it reads a command line and the environment and
// returns how reaper ends.
type mainFunc func(args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) reaper.Exit

// entryPoint returns the front end for the name reaper was invoked as:
// tini's command line for the names in tiniNames, reaper's otherwise.
func entryPoint(argv0 string) mainFunc {
	name := filepath.Base(argv0)
	if !tiniNames[name] {
		return run
	}
	return func(args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) reaper.Exit {
		return runTini(name, args, lookupEnv, stdout, stderr)
	}
}

// tiniOptions is tini's command line and environment.
type tiniOptions struct {
	action      action
	license     bool
	group       bool           // -g, TINI_KILL_PROCESS_GROUP
	verbosity   int            // tini's level; -1 unless -v or TINI_VERBOSITY (tini's default is 1)
	warnOnReap  bool           // -w
	parentDeath syscall.Signal // -p: the signal reaper gets when its parent dies
	successExit []int          // -e
	command     []string
}

// runTini runs reaper with tini's command line. Usage errors exit 2, as
// reaper's do (tini exits 1).
func runTini(name string, args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) reaper.Exit {
	opts, err := parseTini(args, lookupEnv)
	if err != nil {
		fmt.Fprintf(stderr, "reaper: %s (see '%s -h')\n", logs.Escape(err.Error()), name)
		return reaper.Code(reaper.ExitUsage)
	}
	switch {
	case opts.action == showVersion:
		fmt.Fprintln(stdout, tiniVersionLine())
		return reaper.Code(0)
	case opts.action == showHelp:
		printTiniHelp(stdout, name)
		return reaper.Code(0)
	case opts.license:
		fmt.Fprintf(stdout, "reaper %s, running as %s: it reads tini's command line but shares no code with tini; "+
			"see https://github.com/reaper-init/reaper for its licence\n", version, name)
		return reaper.Code(0)
	}
	cfg, err := opts.config(lookupEnv)
	if err != nil {
		fmt.Fprintf(stderr, "reaper: %s (see '%s -h')\n", logs.Escape(err.Error()), name)
		return reaper.Code(reaper.ExitUsage)
	}
	if opts.parentDeath != 0 {
		if err := setParentDeathSignal(opts.parentDeath); err != nil {
			fmt.Fprintf(stderr, "reaper: -p %s: %v\n", signals.Name(opts.parentDeath), err)
			return reaper.Code(reaper.ExitInternal)
		}
	}
	cfg.Stderr, cfg.Signals = stderr, caught
	return reaper.Run(cfg)
}

// tiniVersionLine is what --version prints: tini's format, which dockerd
// parses for `docker info` (the version after "tini version ", the commit
// after " - git."), naming reaper where tini names its commit.
func tiniVersionLine() string {
	return "tini version " + tiniVersion + " - reaper " + version
}

// parseTini reads tini's command line as tini's getopt("+p:hvwgle:s") does:
// options up to "--" or the first argument that is not one, single letters
// that may be grouped (-sg, -vvv), values attached or separate (-e143,
// -e 143). --version counts only alone, as in tini. Then the TINI_*
// variables, which tini reads after the flags: TINI_VERBOSITY replaces -v.
func parseTini(args []string, lookupEnv func(string) (string, bool)) (tiniOptions, error) {
	opts := tiniOptions{action: runCommand, verbosity: -1}
	if len(args) == 1 && args[0] == "--version" {
		opts.action = showVersion
		return opts, nil
	}
	i := 0
	for ; i < len(args); i++ {
		arg := args[i]
		if arg == "--" {
			i++
			break
		}
		if len(arg) < 2 || arg[0] != '-' {
			break
		}
		if arg[1] == '-' {
			return opts, fmt.Errorf("unknown flag %s", arg)
		}
		consumed, err := opts.letters(arg[1:], args[i+1:])
		if err != nil {
			return opts, err
		}
		i += consumed
		if opts.action != runCommand || opts.license {
			return opts, nil // tini acts on -h and -l at once
		}
	}
	opts.command = args[i:]
	if len(opts.command) == 0 {
		return opts, errors.New("no COMMAND given")
	}
	return opts, opts.env(lookupEnv)
}

// letters applies one group of single-letter options, such as "sgv" or
// "e143". A letter that takes a value and ends the group takes the next
// argument from rest; letters returns how many it took.
func (o *tiniOptions) letters(group string, rest []string) (int, error) {
	for j := 0; j < len(group); j++ {
		c := group[j]
		switch c {
		case 's': // reaper is always a subreaper (or PID 1)
		case 'g':
			o.group = true
		case 'v':
			o.verbosity = max(o.verbosity, 1) + 1
		case 'w':
			o.warnOnReap = true
		case 'h':
			o.action = showHelp
			return 0, nil
		case 'l':
			o.license = true
			return 0, nil
		case 'p', 'e':
			value, took := group[j+1:], 0
			if value == "" {
				if len(rest) == 0 {
					return 0, fmt.Errorf("-%c needs a value", c)
				}
				value, took = rest[0], 1
			}
			return took, o.value(c, value)
		default:
			return 0, fmt.Errorf("unknown flag -%c", c)
		}
	}
	return 0, nil
}

// value applies -p SIGNAL or -e EXIT_CODE.
func (o *tiniOptions) value(letter byte, value string) error {
	if letter == 'p' {
		sig, err := signals.Parse(value)
		if err != nil {
			return fmt.Errorf("invalid value %q for -p: %v", value, err)
		}
		o.parentDeath = sig
		return nil
	}
	n, err := strconv.Atoi(value)
	if err != nil || n < 0 || n > 255 {
		return fmt.Errorf("invalid value %q for -e: not an exit code 0-255", value)
	}
	o.successExit = append(o.successExit, n)
	return nil
}

// env applies tini's variables: TINI_KILL_PROCESS_GROUP (set, whatever its
// value, means -g), TINI_VERBOSITY (replaces -v) and TINI_SUBREAPER (nothing
// to do).
func (o *tiniOptions) env(lookupEnv func(string) (string, bool)) error {
	if _, ok := lookupEnv("TINI_KILL_PROCESS_GROUP"); ok {
		o.group = true
	}
	if v, ok := lookupEnv("TINI_VERBOSITY"); ok {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 0 {
			return fmt.Errorf("invalid value %q in TINI_VERBOSITY: not a verbosity 0-4", v)
		}
		o.verbosity = n
	}
	return nil
}

// config builds reaper's configuration: reaper's defaults and REAPER_*
// variables first, then tini's options over them.
//
//   - Forwarding: to COMMAND's process group with -g, to COMMAND alone
//     otherwise (tini's default), unless REAPER_FORWARD says where.
//   - -e N: exit 0 when COMMAND's status is N (as --success-exit).
//   - Verbosity: tini's level 1 (warnings, its default) is reaper's 0, 2 is
//     -v, 3 and more -vv; -w logs every reaped process (-vv).
//   - -s: nothing to do, reaper is always a subreaper or PID 1.
func (o tiniOptions) config(lookupEnv func(string) (string, bool)) (reaper.Config, error) {
	cfg, _, err := parse(append([]string{"--"}, o.command...), lookupEnv)
	if err != nil {
		return cfg, err
	}
	switch _, forwardSet := lookupEnv("REAPER_FORWARD"); {
	case o.group:
		cfg.Policy.Target = signals.Group
	case !forwardSet:
		cfg.Policy.Target = signals.Child
	}
	cfg.SuccessExit = append(cfg.SuccessExit, o.successExit...)
	if o.verbosity >= 0 {
		cfg.Verbosity = min(max(o.verbosity-1, 0), 2)
	}
	if o.warnOnReap {
		cfg.Verbosity = 2
	}
	return cfg, nil
}

// setParentDeathSignal asks the kernel to send sig to reaper when its parent
// dies, as tini -p does. The setting belongs to the calling thread, so the
// goroutine stays on it: reaper.Run locks it there for good as well.
func setParentDeathSignal(sig syscall.Signal) error {
	runtime.LockOSThread()
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(sig), 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_PDEATHSIG): %w", err)
	}
	return nil
}

// printTiniHelp writes -h: tini's options, and what reaper makes of them.
func printTiniHelp(w io.Writer, name string) {
	fmt.Fprintf(w, `%s (%s)
Usage: %s [OPTIONS] [--] PROGRAM [ARGS...] | --version

This is reaper, invoked as %s: it reads tini's command line.
It runs PROGRAM, forwards signals to it, reaps zombies and, before it exits
with PROGRAM's status, stops every process left below it (reaper's teardown).

Options:
  --version    print the version line dockerd expects from an init and exit
  -h           print this help and exit
  -s           register as a subreaper (reaper always is; accepted, ignored)
  -p SIGNAL    reaper gets SIGNAL when its parent dies, e.g. -p SIGTERM
  -v           more logs: -v info, -vv debug
  -w           log every reaped process (as -vv)
  -g           forward signals to PROGRAM's process group, not PROGRAM alone
  -e CODE      exit 0 when PROGRAM exits with CODE (repeatable)
  -l           print a licence line and exit

Environment:
  TINI_KILL_PROCESS_GROUP  set: as -g
  TINI_VERBOSITY           tini's level (1 warnings, 2 info, 3 debug); replaces -v
  TINI_SUBREAPER           accepted, ignored
  REAPER_*                 reaper's own settings (REAPER_GRACE=10s, ...); see
                           reaper --help. tini's options win over them.
`, name, tiniVersionLine(), name, name)
}
