package main

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"github.com/reaper-init/reaper/reaper"
)

func TestEntryPointByName(t *testing.T) {
	for _, argv0 := range []string{"tini", "/usr/bin/tini-static", "/sbin/docker-init", "/run/podman-init"} {
		var out bytes.Buffer
		if code := entryPoint(argv0)([]string{"--version"}, env(nil), &out, &out); code != reaper.Code(0) || !strings.HasPrefix(out.String(), "tini version ") {
			t.Errorf("%s --version: %d %q, want tini's line", argv0, code, out.String())
		}
	}
	for _, argv0 := range []string{"reaper", "/usr/local/bin/reaper", "init", "tini.sh"} {
		var out bytes.Buffer
		if code := entryPoint(argv0)([]string{"--version"}, env(nil), &out, &out); code != reaper.Code(0) || !strings.HasPrefix(out.String(), "reaper version ") {
			t.Errorf("%s --version: %d %q, want reaper's line", argv0, code, out.String())
		}
	}
}

func TestTiniCommandLine(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want tiniOptions
	}{
		{[]string{"--", "cmd", "-x"}, tiniOptions{verbosity: -1, command: []string{"cmd", "-x"}}},
		{[]string{"cmd", "--", "-x"}, tiniOptions{verbosity: -1, command: []string{"cmd", "--", "-x"}}},
		{[]string{"-s", "-g", "--", "cmd"}, tiniOptions{verbosity: -1, group: true, command: []string{"cmd"}}},
		{[]string{"-sgvw", "cmd", "-g"}, tiniOptions{verbosity: 2, group: true, warnOnReap: true, command: []string{"cmd", "-g"}}},
		{[]string{"-vvv", "-e", "143", "-e5", "-pSIGTERM", "--", "cmd"},
			tiniOptions{verbosity: 4, successExit: []int{143, 5}, parentDeath: syscall.SIGTERM, command: []string{"cmd"}}},
		{[]string{"-p", "SIGKILL", "-ge", "0", "cmd"},
			tiniOptions{verbosity: -1, group: true, successExit: []int{0}, parentDeath: syscall.SIGKILL, command: []string{"cmd"}}},
		{[]string{"--version"}, tiniOptions{verbosity: -1, action: showVersion}},
		{[]string{"-h", "--bogus"}, tiniOptions{verbosity: -1, action: showHelp}},
		{[]string{"-sl"}, tiniOptions{verbosity: -1, license: true}},
	} {
		got, err := parseTini(tc.args, env(nil))
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseTini(%q) = %+v, %v; want %+v", tc.args, got, err, tc.want)
		}
	}
}

func TestTiniUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		nil, {"-s"}, {"-s", "--"}, {"-x", "cmd"}, {"--version", "cmd"}, {"--grace=1s", "cmd"},
		{"-e"}, {"-e", "256", "cmd"}, {"-e", "x", "cmd"}, {"-p", "SIGNOPE", "cmd"}, {"-p"},
	} {
		var out, errOut bytes.Buffer
		code := entryPoint("docker-init")(args, env(nil), &out, &errOut).Code
		if code != 2 || out.Len() != 0 || strings.Count(errOut.String(), "\n") != 1 {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want 2 and one line on stderr", args, code, out.String(), errOut.String())
		}
	}
	if _, err := parseTini([]string{"cmd"}, env(map[string]string{"TINI_VERBOSITY": "loud"})); err == nil {
		t.Error("TINI_VERBOSITY=loud accepted")
	}
}

func TestTiniConfig(t *testing.T) {
	for _, tc := range []struct {
		args []string
		vars map[string]string
		want string
	}{
		// tini forwards to the child alone unless -g; reaper's stop still
		// reaches every descendant.
		{[]string{"--", "cmd"}, nil, "child v0 [] -1ns [cmd]"},
		{[]string{"-g", "cmd"}, nil, "group v0 [] -1ns [cmd]"},
		{[]string{"cmd"}, map[string]string{"TINI_KILL_PROCESS_GROUP": ""}, "group v0 [] -1ns [cmd]"},
		{[]string{"cmd"}, map[string]string{"REAPER_FORWARD": "group"}, "group v0 [] -1ns [cmd]"},
		{[]string{"-v", "cmd"}, nil, "child v1 [] -1ns [cmd]"},
		{[]string{"-vvv", "cmd"}, map[string]string{"REAPER_VERBOSE": "0"}, "child v2 [] -1ns [cmd]"},
		{[]string{"-vv", "cmd"}, map[string]string{"TINI_VERBOSITY": "1"}, "child v0 [] -1ns [cmd]"},
		{[]string{"-w", "cmd"}, nil, "child v2 [] -1ns [cmd]"},
		{[]string{"cmd"}, map[string]string{"REAPER_VERBOSE": "1"}, "child v1 [] -1ns [cmd]"},
		// REAPER_* settings are reaper's own behaviour, tini's options go on top.
		{[]string{"-e", "143", "-e", "3", "cmd", "a"}, map[string]string{"REAPER_SUCCESS_EXIT": "1", "REAPER_GRACE": "2s"},
			"child v0 [1 143 3] 2s [cmd a]"},
	} {
		opts, err := parseTini(tc.args, env(tc.vars))
		if err != nil {
			t.Fatalf("parseTini(%q): %v", tc.args, err)
		}
		cfg, err := opts.config(env(tc.vars))
		if err != nil {
			t.Fatalf("config(%q): %v", tc.args, err)
		}
		got := fmt.Sprintf("%s v%d %v %s %v", cfg.Policy.Target, cfg.Verbosity, cfg.SuccessExit, cfg.Grace, cfg.Command)
		if got != tc.want {
			t.Errorf("%q %v: %q, want %q", tc.args, tc.vars, got, tc.want)
		}
	}
	bad := env(map[string]string{"REAPER_GRACE": "soon"})
	if opts, err := parseTini([]string{"cmd"}, bad); err != nil {
		t.Fatal(err)
	} else if _, err := opts.config(bad); err == nil {
		t.Error("a bad REAPER_GRACE is accepted in tini mode")
	}
}

// dockerInitVersion reads an init's --version output the way dockerd does for
// `docker info` and `docker version` (daemon/info_unix.go): the text is split
// at " - "; the version is what follows "tini version " in the first part, the
// commit what follows "git." in the second; output with neither is an error.
func dockerInitVersion(out string) (version, commit string, ok bool) {
	parts := strings.Split(out, " - ")
	if len(parts) >= 2 {
		if git := strings.Split(strings.TrimSpace(parts[1]), "."); len(git) == 2 && git[0] == "git" {
			commit = git[1]
		}
	}
	version, _ = strings.CutPrefix(strings.TrimSpace(parts[0]), "tini version ")
	if version == strings.TrimSpace(parts[0]) {
		version = ""
	}
	return version, commit, version != "" || commit != ""
}

func TestTiniVersionParsesAsDockerExpects(t *testing.T) {
	var out bytes.Buffer
	if code := entryPoint("docker-init")([]string{"--version"}, env(nil), &out, &out); code != reaper.Code(0) {
		t.Fatalf("exit %d", code)
	}
	if strings.Count(out.String(), "\n") != 1 {
		t.Errorf("--version printed %q, want one line", out.String())
	}
	version, commit, ok := dockerInitVersion(out.String())
	if !ok || version != tiniVersion || commit != "" {
		t.Errorf("dockerd would read version %q commit %q (ok %v) from %q", version, commit, ok, out.String())
	}
	// The parser itself, on tini's own line.
	if v, c, ok := dockerInitVersion("tini version 0.19.0 - git.de40ad0\n"); !ok || v != "0.19.0" || c != "de40ad0" {
		t.Errorf("tini's line: %q %q %v", v, c, ok)
	}
}

func TestTiniHelpAndLicence(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"-l"}, {"-s", "-l", "cmd"}} {
		var out, errOut bytes.Buffer
		if code := entryPoint("tini")(args, env(nil), &out, &errOut); code != reaper.Code(0) || out.Len() == 0 || errOut.Len() != 0 {
			t.Errorf("tini %q: exit %d, stdout %q, stderr %q", args, code, out.String(), errOut.String())
		}
	}
}
