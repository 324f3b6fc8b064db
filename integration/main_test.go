// Package integration drives the built reaper binary from outside, on real
// processes, process groups, PID namespaces and cgroups.
package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// BinSet holds the binaries TestMain builds once for every test.
type BinSet struct {
	Reaper  string // the command under test, built as the README says
	Plain   string // the same built by a bare "go build", also named reaper
	Helper  string // payload: records signals, lists fds
	Harness string // observer: counts what reaper leaves behind
	Floor   string // the least a Go init can do, for the benchmarks
}

var (
	binaries    BinSet
	sourcesOnce sync.Once
)

// Bin returns the binaries TestMain built. Its first call, which comes from
// a test, opens every source file of the project (see openSources).
func Bin() *BinSet {
	sourcesOnce.Do(func() { openSources("..") })
	return &binaries
}

// PreemptOff is the linker flag of every documented build: see
// cmd/reaper/preempt.go.
const PreemptOff = "-ldflags=-s -w -X=runtime.godebugDefault=asyncpreemptoff=1,containermaxprocs=0,updatemaxprocs=0"

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "reaper-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := 1
	os.Chmod(dir, 0o755) // unprivileged runs execute the binaries too
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
// reaper itself. Files a test opens are part of the cache key (from inside
// testing.M.Run only: TestMain's own opens are not recorded).
func openSources(root string) {
	filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		switch {
		case err != nil:
			return nil
		case d.IsDir() && path != root && strings.HasPrefix(d.Name(), "."):
			return filepath.SkipDir // .git and the like: they change at every commit
		case d.IsDir():
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
		{&binaries.Reaper, "reaper", "../cmd/reaper", []string{PreemptOff}},
		{&binaries.Plain, "plain/reaper", "../cmd/reaper", nil},
		{&binaries.Helper, "helper", "./testdata/helper", []string{PreemptOff}},
		{&binaries.Harness, "harness", "./testdata/harness", nil},
		{&binaries.Floor, "floor", "./testdata/floor", []string{PreemptOff}},
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
