package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/reaper-init/reaper/reaper"
	"github.com/reaper-init/reaper/reaper/instance"
	"github.com/reaper-init/reaper/signals"
)

// version is reaper's release; the build may override it with
// -ldflags "-X main.version=...".
var version = "0.1.0"

// action is what the command line asks for besides running COMMAND.
type action int

const (
	runCommand action = iota
	showHelp
	showVersion
)

// option is one flag, and the REAPER_* variable that sets it too.
type option struct {
	name  string // without dashes
	arg   string // placeholder in --help; "" for a switch
	usage string
	value flag.Value
	// list options take several values: repeated flags, or one variable
	// holding values separated by commas.
	list bool
	// cliOnly options have no variable.
	cliOnly bool
}

// envName is the variable that sets o: REAPER_ and the flag name in capitals
// with dashes as underscores.
func (o option) envName() string {
	return "REAPER_" + strings.ToUpper(strings.ReplaceAll(o.name, "-", "_"))
}

// options returns reaper's flags, each bound to its field in cfg.
func options(cfg *reaper.Config, act *action) []option {
	return []option{
		{name: "forward", arg: "child|group", usage: "send forwarded signals to COMMAND alone, or to its process group (default child)",
			value: funcValue(func(s string) error {
				t, err := signals.ParseTarget(s)
				cfg.Policy.Target = t
				return err
			})},
		{name: "rewrite", arg: "FROM:TO", list: true, usage: "forward signal FROM as TO; TO 0 drops FROM (repeatable; TERM:QUIT, HUP:0)",
			value: funcValue(func(s string) error {
				r, err := signals.ParseRewrite(s)
				if err == nil {
					cfg.Policy.Rewrites, err = signals.AddRewrite(cfg.Policy.Rewrites, r)
				}
				return err
			})},
		{name: "success-exit", arg: "N", list: true, usage: "exit 0 when COMMAND's status is N, or 128+S for signal S (repeatable; 143: killed by SIGTERM)",
			value: funcValue(func(s string) error {
				n, err := strconv.Atoi(strings.TrimSpace(s))
				if err != nil || n < 0 || n > 255 {
					return fmt.Errorf("%q is not an exit code 0-255", s)
				}
				cfg.SuccessExit = append(cfg.SuccessExit, n)
				return nil
			})},
		{name: "stop-on", arg: "SIG", list: true, usage: "a signal that, received, begins a stop (repeatable; default TERM and the --stop-signal, and INT when GITHUB_ACTIONS=true); any other is only forwarded",
			value: funcValue(func(s string) error {
				sig, err := signals.ParseStopOn(s)
				cfg.Policy.StopOn = append(cfg.Policy.StopOn, sig)
				return err
			})},
		{name: "stop-signal", arg: "SIG", usage: "signal a stop sends every descendant (default TERM)",
			value: funcValue(func(s string) error {
				sig, err := signals.Parse(s)
				cfg.StopSignal = sig
				return err
			})},
		{name: "pdeathsig", arg: "SIG|none", usage: "signal the kernel sends COMMAND if reaper dies (default KILL)",
			value: funcValue(func(s string) error {
				if strings.EqualFold(strings.TrimSpace(s), "none") {
					cfg.PdeathSignal = 0
					return nil
				}
				sig, err := signals.Parse(s)
				cfg.PdeathSignal = sig
				return err
			})},
		{name: "grace", arg: "DURATION", usage: "how long a stop waits before SIGKILL; 0: the stop signal, then SIGKILL at once (default: as the manager allows: a systemd unit's stop timeout, no deadline as PID 1, else 5s)",
			value: durationValue(&cfg.Grace)},
		{name: "kill-mode", arg: "mixed|control-group", usage: "who a stop request reaches first: COMMAND, then the others once it has exited (mixed), or every descendant at once (default mixed)",
			value: funcValue(func(s string) error {
				switch s {
				case reaper.KillModeMixed, reaper.KillModeControlGroup:
					cfg.KillMode = s
					return nil
				}
				return fmt.Errorf("%q is neither mixed nor control-group", s)
			})},
		{name: "timeout", arg: "DURATION", usage: "stop everything this long after COMMAND starts, then exit 124 (default none; 0: none)",
			value: durationValue(&cfg.Timeout)},
		{name: "wait", usage: "when COMMAND exits, wait for the other descendants to exit on their own instead of stopping them",
			value: boolValue(&cfg.Wait)},
		{name: "leftovers", arg: "stop|fail", usage: "when COMMAND exits 0 but leaves processes that must be stopped: stop them (stop), or stop them and exit 123 (fail) (default stop)",
			value: funcValue(func(s string) error {
				switch s {
				case reaper.LeftoversStop, reaper.LeftoversFail:
					cfg.Leftovers = s
					return nil
				}
				return fmt.Errorf("%q is neither stop nor fail", s)
			})},
		{name: "report", arg: "FILE", usage: "write a JSON account of COMMAND's status and of the teardown to FILE",
			value: funcValue(func(s string) error { cfg.ReportPath = s; return nil })},
		// No variable: REAPER_INSTANCE is what reaper exports to COMMAND, and a
		// reaper started below another must not take its instance.
		{name: "instance", arg: "NAME", cliOnly: true,
			usage: "name the run: refuse a second live reaper of NAME, sweep leftovers of an earlier run first (default: unique per run)",
			value: funcValue(func(s string) error {
				cfg.Instance = s
				return instance.Check(s)
			})},
		{name: "replace", usage: "with --instance: stop a live reaper of the same instance instead of refusing to start",
			value: boolValue(&cfg.Replace)},
		{name: "cgroup", arg: "auto|on|off", usage: "contain COMMAND in a cgroup v2 leaf group: when possible, always, never (default auto)",
			value: funcValue(func(s string) error {
				switch s {
				case reaper.CgroupAuto, reaper.CgroupOn, reaper.CgroupOff:
					cfg.Cgroup = s
					return nil
				}
				return fmt.Errorf("%q is not auto, on or off", s)
			})},
		{name: "guardian", arg: "auto|off", usage: "stop what the run left should reaper itself be killed (a guardian process; never as PID 1, whose death ends its namespace) (default auto)",
			value: funcValue(func(s string) error {
				switch s {
				case reaper.GuardianAuto, reaper.GuardianOff:
					cfg.Guardian = s
					return nil
				}
				return fmt.Errorf("%q is neither auto nor off", s)
			})},
		{name: "wait-port", arg: "PORT", list: true, usage: "before starting, wait until nobody listens on TCP PORT (repeatable)",
			value: funcValue(func(s string) error {
				n, err := strconv.Atoi(strings.TrimSpace(s))
				if err != nil || n < 1 || n > 65535 {
					return fmt.Errorf("%q is not a TCP port 1-65535", s)
				}
				cfg.WaitPorts = append(cfg.WaitPorts, n)
				return nil
			})},
		{name: "wait-port-timeout", arg: "DURATION", usage: "how long --wait-port waits before giving up with exit 2 (default 10s)",
			value: durationValue(&cfg.WaitPortTimeout)},
		{name: "log-format", arg: "console|json", usage: "log line format on stderr (default console)",
			value: funcValue(func(s string) error {
				if s != reaper.LogConsole && s != reaper.LogJSON {
					return fmt.Errorf("%q is neither console nor json", s)
				}
				cfg.LogFormat = s
				return nil
			})},
		{name: "verbose", arg: "N", usage: "log level: 0 warnings and errors, 1 info (-v), 2 debug (-vv)",
			value: funcValue(func(s string) error {
				n, err := strconv.Atoi(s)
				if err != nil || n < 0 || n > 2 {
					return fmt.Errorf("%q is not a verbosity 0, 1 or 2", s)
				}
				cfg.Verbosity = n
				return nil
			})},
		{name: "v", usage: "log info; -vv (or -v -v) logs debug", cliOnly: true,
			value: countValue(&cfg.Verbosity, 1)},
		{name: "vv", cliOnly: true, value: countValue(&cfg.Verbosity, 2)},
		{name: "version", usage: "print reaper's version and exit", cliOnly: true, value: actionValue(act, showVersion)},
		{name: "help", usage: "print this help and exit (also -h)", cliOnly: true, value: actionValue(act, showHelp)},
		{name: "h", cliOnly: true, value: actionValue(act, showHelp)},
	}
}

// defaults returns the configuration before flags and variables apply.
func defaults() reaper.Config {
	return reaper.Config{
		StopSignal:      syscall.SIGTERM,
		PdeathSignal:    syscall.SIGKILL,
		Cgroup:          reaper.CgroupAuto,
		Guardian:        reaper.GuardianAuto,
		Leftovers:       reaper.LeftoversStop,
		WaitPortTimeout: 10 * time.Second,
		Grace:           reaper.GraceAuto,
		KillMode:        reaper.KillModeMixed,
		LogFormat:       reaper.LogConsole,
	}
}

// parse reads the command line and the REAPER_* variables into a Config.
// A flag wins over its variable.
func parse(args []string, lookupEnv func(string) (string, bool)) (reaper.Config, action, error) {
	cfg := defaults()
	act := runCommand
	opts := options(&cfg, &act)
	fs := flag.NewFlagSet("reaper", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	for _, o := range opts {
		value := o.value
		if o.list {
			value = commaList(o.value)
		}
		fs.Var(value, o.name, o.usage)
	}
	if err := fs.Parse(args); err != nil {
		return cfg, act, flagError(err, args)
	}
	if act != runCommand {
		return cfg, act, nil
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	if given["v"] || given["vv"] {
		given["verbose"] = true
	}
	for _, o := range opts {
		if o.cliOnly || given[o.name] {
			continue
		}
		if err := applyEnv(o, lookupEnv); err != nil {
			return cfg, act, err
		}
	}
	if fs.NArg() == 0 {
		return cfg, act, errors.New("no COMMAND given")
	}
	if cfg.Replace && cfg.Instance == "" {
		return cfg, act, errors.New("--replace needs --instance")
	}
	cfg.Command = fs.Args()
	cfg.DropEnv = configVariables(opts)
	applyCI(&cfg, given, lookupEnv)
	return cfg, act, nil
}

// applyCI adapts the defaults to the CI system reaper runs under, from the
// variables it sets. In GitHub Actions (GITHUB_ACTIONS=true) the runner
// cancels a step with SIGINT, then SIGTERM 7.5 s later, then kills what is
// left 2.5 s after that: SIGINT is a stop request there, unless --stop-on
// says otherwise, and a step summary is written to $GITHUB_STEP_SUMMARY.
func applyCI(cfg *reaper.Config, given map[string]bool, lookupEnv func(string) (string, bool)) {
	if v, _ := lookupEnv("GITHUB_ACTIONS"); v != "true" {
		return
	}
	if _, set := lookupEnv("REAPER_STOP_ON"); !given["stop-on"] && !set {
		cfg.Policy.StopOn = []syscall.Signal{syscall.SIGTERM, syscall.SIGINT}
		if cfg.StopSignal != syscall.SIGTERM && cfg.StopSignal != syscall.SIGINT {
			cfg.Policy.StopOn = append(cfg.Policy.StopOn, cfg.StopSignal)
		}
	}
	if path, ok := lookupEnv("GITHUB_STEP_SUMMARY"); ok && path != "" {
		cfg.StepSummary = path
	}
}

// configVariables names reaper's configuration variables: COMMAND does not
// get them (a reaper below this one is configured by its own flags).
func configVariables(opts []option) []string {
	var names []string
	for _, o := range opts {
		if !o.cliOnly {
			names = append(names, o.envName())
		}
	}
	return names
}

// applyEnv sets o from its REAPER_* variable, when that is set.
func applyEnv(o option, lookupEnv func(string) (string, bool)) error {
	raw, ok := lookupEnv(o.envName())
	if !ok {
		return nil
	}
	values := []string{raw}
	if o.list {
		values = strings.Split(raw, ",")
	}
	for _, v := range values {
		if o.list && strings.TrimSpace(v) == "" {
			continue
		}
		if err := o.value.Set(v); err != nil {
			return fmt.Errorf("invalid value %q in %s: %v", raw, o.envName(), err)
		}
	}
	return nil
}

// flagError rewrites the flag package's messages into one plain sentence
// that names flags the way --help shows them, and an unknown flag the way
// it was typed (args).
func flagError(err error, args []string) error {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		return fmt.Errorf("unknown flag %s", asTyped(name, args))
	}
	// "invalid value "x" for flag -grace: reason" and
	// "invalid boolean value "x" for -wait: reason"
	for _, sep := range []string{" for flag -", " for -"} {
		if before, after, ok := strings.Cut(msg, sep); ok {
			name, reason, _ := strings.Cut(after, ": ")
			before = strings.Replace(before, "invalid boolean value", "invalid value", 1)
			return fmt.Errorf("%s for %s: %s", before, dashed(name), reason)
		}
	}
	if name, ok := strings.CutPrefix(msg, "flag needs an argument: -"); ok {
		return fmt.Errorf("%s needs a value", dashed(name))
	}
	return errors.New(msg)
}

// asTyped returns the argument that named flag name, without its value: -x
// or --x as the user wrote it (dashed(name) if none did).
func asTyped(name string, args []string) string {
	for _, a := range args {
		if a == "--" {
			break
		}
		flagPart, _, _ := strings.Cut(a, "=")
		if strings.TrimLeft(flagPart, "-") == name && strings.HasPrefix(flagPart, "-") {
			return flagPart
		}
	}
	return dashed(name)
}

// dashed writes a flag name as --help does: -v, --grace.
func dashed(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

// commaList is a list flag: --stop-on=TERM,INT gives v both values, as
// REAPER_STOP_ON=TERM,INT does, and so does --stop-on=TERM --stop-on=INT.
func commaList(v flag.Value) flag.Value {
	return funcValue(func(s string) error {
		for _, part := range strings.Split(s, ",") {
			if strings.TrimSpace(part) == "" {
				continue // as in a variable: "TERM,," is TERM
			}
			if err := v.Set(part); err != nil {
				return err
			}
		}
		return nil
	})
}

// funcValue is a flag.Value that hands each value to set.
type funcValue func(string) error

func (f funcValue) Set(s string) error { return f(s) }
func (f funcValue) String() string     { return "" }

// durationValue reads "5s", "1m30s", "250ms" or a plain number of seconds.
func durationValue(d *time.Duration) flag.Value {
	return funcValue(func(s string) error {
		v, err := parseDuration(s)
		*d = v
		return err
	})
}

// parseDuration reads a Go duration ("1m30s") or a number of seconds ("2.5").
// Negative durations are refused.
func parseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	d, err := time.ParseDuration(s)
	if err != nil {
		secs, ferr := strconv.ParseFloat(s, 64)
		if ferr != nil || secs != secs || secs > float64(1<<62)/float64(time.Second) {
			return 0, fmt.Errorf("%q is not a duration like 5s, 250ms or 2.5", s)
		}
		d = time.Duration(secs * float64(time.Second))
	}
	if d < 0 {
		return 0, fmt.Errorf("duration %q is negative", s)
	}
	return d, nil
}

// boolValue is a switch that also reads "true", "false", "1" and "0".
func boolValue(b *bool) flag.Value { return boolFlag{b} }

type boolFlag struct{ b *bool }

func (f boolFlag) Set(s string) error {
	v, err := strconv.ParseBool(strings.TrimSpace(s))
	if err != nil {
		return fmt.Errorf("%q is not true or false", s)
	}
	*f.b = v
	return nil
}
func (f boolFlag) String() string   { return "" }
func (f boolFlag) IsBoolFlag() bool { return true }

// countValue adds step to *n each time the switch is given.
func countValue(n *int, step int) flag.Value {
	return countFlag{n, step}
}

type countFlag struct {
	n    *int
	step int
}

func (f countFlag) Set(s string) error {
	if v, err := strconv.ParseBool(s); err != nil || !v {
		return fmt.Errorf("%q: this switch takes no value", s)
	}
	*f.n += f.step
	return nil
}
func (f countFlag) String() string   { return "" }
func (f countFlag) IsBoolFlag() bool { return true }

// actionValue is a switch that selects an action.
func actionValue(act *action, a action) flag.Value {
	return funcBool(func() { *act = a })
}

type funcBool func()

func (f funcBool) Set(s string) error {
	if v, err := strconv.ParseBool(s); err != nil || !v {
		return fmt.Errorf("%q: this switch takes no value", s)
	}
	f()
	return nil
}
func (f funcBool) String() string   { return "" }
func (f funcBool) IsBoolFlag() bool { return true }
