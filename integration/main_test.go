// Package integration drives the built reaper binary from outside, on real
// processes, process groups, PID namespaces and cgroups.
package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// bin holds the binaries TestMain builds once for every test.
var bin struct {
	reaper  string // the command under test, built as the README says
	plain   string // the same built by a bare "go build"
	helper  string // payload: records signals, lists fds
	harness string // observer: counts what reaper leaves behind
}

// preemptOff is the linker flag of every documented build: see
// cmd/reaper/preempt.go.
const preemptOff = "-ldflags=-s -w -X=runtime.godebugDefault=asyncpreemptoff=1,containermaxprocs=0,updatemaxprocs=0"

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "reaper-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := 1
	os.Chmod(dir, 0o755) // unprivileged runs execute the binaries too
	openSources("..")
	if err := buildAll(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
	} else {
		code = m.Run()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// openSources opens every Go source and module file of the project. The
// binaries under test are built by a child "go build", which the go
// command's test cache cannot see: a cached pass would survive a change to
// reaper itself. Files the test process opens are part of the cache key.
func openSources(root string) {
	filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if name := d.Name(); strings.HasSuffix(name, ".go") || name == "go.mod" || name == "go.sum" {
			if f, err := os.Open(path); err == nil {
				f.Close()
			}
		}
		return nil
	})
}

func buildAll(dir string) error {
	for _, b := range []struct {
		out   *string
		name  string
		pkg   string
		flags []string
	}{
		{&bin.reaper, "reaper", "../cmd/reaper", []string{preemptOff}},
		{&bin.plain, "reaper-plain", "../cmd/reaper", nil},
		{&bin.helper, "helper", "./testdata/helper", []string{preemptOff}},
		{&bin.harness, "harness", "./testdata/harness", nil},
	} {
		*b.out = filepath.Join(dir, b.name)
		args := append(append([]string{"build", "-o", *b.out}, b.flags...), b.pkg)
		cmd := exec.Command("go", args...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %v\n%s", b.pkg, err, out)
		}
	}
	return nil
}
