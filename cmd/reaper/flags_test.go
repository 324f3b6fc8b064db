package main

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/reaper-init/reaper/reaper"
	"github.com/reaper-init/reaper/signals"
)

func env(kv map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := kv[k]; return v, ok }
}

func TestParseFlagsAndEnvironment(t *testing.T) {
	cfg, act, err := parse([]string{"--forward=child", "-vv", "--grace", "250ms", "--rewrite=TERM:QUIT", "--", "cmd", "-x"},
		env(map[string]string{"REAPER_REWRITE": "HUP:0,USR1:USR2", "REAPER_FORWARD": "group", "REAPER_TIMEOUT": "90",
			"REAPER_WAIT": "1", "REAPER_PDEATHSIG": "none", "REAPER_VERBOSE": "0"}))
	if err != nil || act != runCommand {
		t.Fatalf("parse: %v %v", act, err)
	}
	if cfg.Policy.Target != signals.Child || cfg.Verbosity != 2 || cfg.Grace != 250*time.Millisecond ||
		cfg.Timeout != 90*time.Second || !cfg.Wait || cfg.PdeathSignal != 0 || cfg.StopSignal != syscall.SIGTERM {
		t.Errorf("cfg = %+v", cfg)
	}
	// The flag wins: REAPER_REWRITE is not applied at all.
	if len(cfg.Policy.Rewrites) != 1 || cfg.Policy.Rewrites[0].From != syscall.SIGTERM {
		t.Errorf("rewrites = %v", cfg.Policy.Rewrites)
	}
	if len(cfg.Command) != 2 || cfg.Command[0] != "cmd" || cfg.Command[1] != "-x" {
		t.Errorf("command = %q", cfg.Command)
	}
}

func TestParseDefaults(t *testing.T) {
	cfg, _, err := parse([]string{"true"}, env(nil))
	if err != nil || cfg.Grace != reaper.GraceAuto || cfg.PdeathSignal != syscall.SIGKILL || cfg.LogFormat != "console" ||
		cfg.Policy.Target != signals.Child || cfg.Timeout != 0 || cfg.KillMode != reaper.KillModeMixed {
		t.Errorf("defaults: %+v %v", cfg, err)
	}
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{"5s": 5 * time.Second, "2.5": 2500 * time.Millisecond, "0": 0, "1m30s": 90 * time.Second, " 250ms ": 250 * time.Millisecond} {
		if got, err := parseDuration(in); err != nil || got != want {
			t.Errorf("parseDuration(%q) = %v, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "-1s", "-2", "soon", "NaN", "1e300", "5 s"} {
		if got, err := parseDuration(in); err == nil {
			t.Errorf("parseDuration(%q) = %v, want an error", in, got)
		}
	}
}

func TestInstanceIsNotReadFromTheEnvironment(t *testing.T) {
	// REAPER_INSTANCE is what a reaper exports to its COMMAND: a reaper
	// started below it must not take the outer instance for its own.
	cfg, _, err := parse([]string{"true"}, env(map[string]string{"REAPER_INSTANCE": "outer"}))
	if err != nil || cfg.Instance != "" {
		t.Errorf("instance %q (%v), want none", cfg.Instance, err)
	}
}

func TestListFlagsTakeCommas(t *testing.T) {
	cfg, _, err := parse([]string{"--stop-on=TERM,INT", "--stop-on", "HUP", "--rewrite=TERM:QUIT,HUP:0", "--success-exit=1,2,", "true"}, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	stops := cfg.Policy.StopOn
	if len(stops) != 3 || stops[0] != syscall.SIGTERM || stops[1] != syscall.SIGINT || stops[2] != syscall.SIGHUP {
		t.Errorf("stop-on = %v", stops)
	}
	if len(cfg.Policy.Rewrites) != 2 || len(cfg.SuccessExit) != 2 {
		t.Errorf("rewrites %v, success-exit %v", cfg.Policy.Rewrites, cfg.SuccessExit)
	}
	cfg, _, err = parse([]string{"true"}, env(map[string]string{"REAPER_STOP_ON": "INT"}))
	if err != nil || len(cfg.Policy.StopOn) != 1 || cfg.Policy.StopOn[0] != syscall.SIGINT {
		t.Errorf("REAPER_STOP_ON=INT: %v, %v", cfg.Policy.StopOn, err)
	}
	if cfg, _, _ := parse([]string{"true"}, env(nil)); cfg.Policy.StopOn != nil {
		t.Errorf("stop-on without flag or variable = %v, want nil: reaper's default (TERM and the stop signal)", cfg.Policy.StopOn)
	}
	if _, _, err := parse([]string{"--stop-on=TERM,KILL", "true"}, env(nil)); err == nil {
		t.Error("--stop-on=KILL accepted")
	}
}

// TestGitHubActions: in GitHub Actions the runner's SIGINT is a stop
// request unless --stop-on or REAPER_STOP_ON says otherwise, and the step
// summary file is taken from its variable.
func TestGitHubActions(t *testing.T) {
	gh := map[string]string{"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": "/tmp/summary.md"}
	cfg, _, err := parse([]string{"make"}, env(gh))
	if err != nil || fmt.Sprint(cfg.Policy.StopOn) != fmt.Sprint([]syscall.Signal{syscall.SIGTERM, syscall.SIGINT}) ||
		cfg.StepSummary != "/tmp/summary.md" {
		t.Errorf("in GitHub Actions: stop on %v, summary %q, %v", cfg.Policy.StopOn, cfg.StepSummary, err)
	}
	if cfg, _, _ := parse([]string{"--stop-on=TERM", "make"}, env(gh)); fmt.Sprint(cfg.Policy.StopOn) != "[terminated]" {
		t.Errorf("--stop-on=TERM in GitHub Actions: stop on %v", cfg.Policy.StopOn)
	}
	gh["REAPER_STOP_ON"] = "HUP"
	if cfg, _, _ := parse([]string{"make"}, env(gh)); fmt.Sprint(cfg.Policy.StopOn) != "[hangup]" {
		t.Errorf("REAPER_STOP_ON=HUP in GitHub Actions: stop on %v", cfg.Policy.StopOn)
	}
	if cfg, _, _ := parse([]string{"make"}, env(nil)); cfg.Policy.StopOn != nil || cfg.StepSummary != "" {
		t.Errorf("outside GitHub Actions: stop on %v, summary %q", cfg.Policy.StopOn, cfg.StepSummary)
	}
}
