// Package itest is the harness of reaper's integration tests: it builds the
// binaries under test once per test binary (Main), runs reaper under an
// observer (Start, Plant), and holds what more than one test package needs:
// cgroups, processes and pidfds, systemd in a container, daemons, builds.
//
// Only tests import it: the test packages are the directories beside it,
// integration and those below it (docs/testing.md lists what each holds).
package itest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// BinSet holds the binaries Main builds once for every test.
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
	root        string // the repository's top directory (see findRoot)
)

// Bin returns the binaries Main built. Its first call, which comes from a
// test, opens every source file of the project (see coverSources).
func Bin() *BinSet {
	coverSources()
	return &binaries
}

// PreemptOff is the linker flag of every documented build: see
// cmd/reaper/preempt.go.
const PreemptOff = "-ldflags=-s -w -X=runtime.godebugDefault=asyncpreemptoff=1,containermaxprocs=0,updatemaxprocs=0"

// Main is the TestMain of every integration test package: it builds the
// binaries (see Bin) into a temporary directory, runs the tests, removes the
// directory and exits with the tests' status.
func Main(m *testing.M) {
	var err error
	if root, err = findRoot(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
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

// coverSources opens every source file of the project once (see
// openSources). Bin and RepoRoot call it: every test package has tests that
// run what Main built from the sources, or build from them themselves.
func coverSources() {
	sourcesOnce.Do(func() { openSources(root) })
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

// buildAll builds the binaries of Bin into dir.
func buildAll(dir string) error {
	for _, b := range []struct {
		out   *string
		name  string
		pkg   string
		flags []string
	}{
		{&binaries.Reaper, "reaper", "./cmd/reaper", []string{PreemptOff}},
		{&binaries.Plain, "plain/reaper", "./cmd/reaper", nil},
		{&binaries.Helper, "helper", "./integration/testdata/helper", []string{PreemptOff}},
		{&binaries.Harness, "harness", "./integration/testdata/harness", nil},
		{&binaries.Floor, "floor", "./integration/testdata/floor", []string{PreemptOff}},
	} {
		*b.out = filepath.Join(dir, b.name)
		args := append(append([]string{"build", "-o", *b.out}, b.flags...), b.pkg)
		cmd := exec.Command("go", args...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %v\n%s", b.pkg, err, out)
		}
	}
	return nil
}

// findRoot returns the repository's top directory: the nearest directory
// holding go.mod at or above the working directory, which is the directory
// of the test package being run.
func findRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod at or above the working directory")
		}
		dir = parent
	}
}

// RepoRoot is the repository's top directory. Its first call, as Bin's,
// opens every source file of the project (see coverSources).
func RepoRoot(t testing.TB) string {
	t.Helper()
	if root == "" {
		t.Fatal("itest.RepoRoot: the test package's TestMain does not call itest.Main")
	}
	coverSources()
	return root
}

// Testdata is the path of the file or directory name in integration/testdata,
// what several test packages read (a test package's own files are in its
// own testdata directory).
func Testdata(t testing.TB, name string) string {
	t.Helper()
	return filepath.Join(RepoRoot(t), "integration", "testdata", name)
}
