package main

import (
	"syscall"
	"testing"
	"time"

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
	if err != nil || cfg.Grace != 5*time.Second || cfg.PdeathSignal != syscall.SIGKILL || cfg.LogFormat != "console" ||
		cfg.Policy.Target != signals.Group || cfg.Timeout != 0 {
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

func TestGodebugValue(t *testing.T) {
	if v, ok := godebugValue("a=1,asyncpreemptoff=0,b=2,asyncpreemptoff=1", "asyncpreemptoff"); !ok || v != "1" {
		t.Errorf("last value wins: %q %v", v, ok)
	}
	if _, ok := godebugValue("a=1", "asyncpreemptoff"); ok {
		t.Error("found a key that is not there")
	}
	if preemptOff("asyncpreemptoff=0") {
		t.Error("GODEBUG=asyncpreemptoff=0 must win over the build default")
	}
	if !preemptOff("x=1,asyncpreemptoff=1") {
		t.Error("GODEBUG=asyncpreemptoff=1 not seen")
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
