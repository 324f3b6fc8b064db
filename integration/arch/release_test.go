package arch

import (
	"bufio"
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/reaper-init/reaper/integration/itest"
)

var release struct {
	once sync.Once
	dir  string
	err  error
}

// releaseDir returns the directory of the release binaries of .ci/release:
// REAPER_DIST when .ci/run built them there, else the tests run .ci/release
// once, into TestMain's directory.
func releaseDir(t *testing.T) string {
	t.Helper()
	release.once.Do(func() {
		if release.dir = os.Getenv("REAPER_DIST"); release.dir != "" {
			return
		}
		release.dir = filepath.Join(filepath.Dir(itest.Bin().Reaper), "dist")
		if out, err := exec.Command(filepath.Join(itest.RepoRoot(t), ".ci", "release"), release.dir).CombinedOutput(); err != nil {
			release.err = fmt.Errorf(".ci/release: %v\n%s", err, out)
		}
	})
	if release.err != nil {
		t.Fatal(release.err)
	}
	return release.dir
}

// TestReleaseBinaries: .ci/release built, for every architecture, a static
// binary of that architecture, built as documented, with the commit
// stamped; SHA256SUMS lists each; the binary of this machine's
// architecture names its version and commit.
func TestReleaseBinaries(t *testing.T) {
	dir := releaseDir(t)
	sums := readSums(t, filepath.Join(dir, "SHA256SUMS"))
	head := itest.GitHead(t)
	for _, r := range itest.ReleaseTargets {
		t.Run(r.Target, func(t *testing.T) {
			path := filepath.Join(dir, r.File())
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if sum := sha256.Sum256(data); sums[r.File()] != hex.EncodeToString(sum[:]) {
				t.Errorf("SHA256SUMS: %q, the file's sum is %x", sums[r.File()], sum)
			}
			delete(sums, r.File())
			if err := itest.ELFOf(path, r); err != nil {
				t.Error(err)
			}
			if err := itest.StaticELF(path); err != nil {
				t.Error(err)
			}
			if err := itest.DocumentedBuild(path); err != nil {
				t.Error(err)
			}
			info, err := buildinfo.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if got := itest.SettingOf(info, "GOARCH"); got != r.GOARCH {
				t.Errorf("GOARCH=%s, want %s", got, r.GOARCH)
			}
			if got := itest.SettingOf(info, "GOARM"); r.GOARM != "" && got != r.GOARM {
				t.Errorf("GOARM=%s, want %s", got, r.GOARM)
			}
			if got := itest.SettingOf(info, "GOMIPS"); (r.GOARCH == "mips" || r.GOARCH == "mipsle") && got != "softfloat" {
				t.Errorf("GOMIPS=%s, want softfloat (routers without an FPU)", got)
			}
			if ld := itest.SettingOf(info, "-ldflags"); !strings.Contains(ld, "-X=main.commit="+head) {
				t.Errorf("-ldflags %q: no -X=main.commit=%s", ld, head)
			}
		})
	}
	for name := range sums {
		t.Errorf("SHA256SUMS lists %s, which no target is", name)
	}
	var native string
	for _, r := range itest.ReleaseTargets {
		if r.GOARCH == runtime.GOARCH && (r.GOARM == "" || r.GOARM == "7") {
			native = filepath.Join(dir, r.File()) // this machine's own
		}
	}
	if native == "" {
		t.Fatalf("no release target for this machine's %s", runtime.GOARCH)
	}
	out, err := exec.Command(native, "--version").Output()
	if want := "reaper version "; err != nil || !strings.HasPrefix(string(out), want) || !strings.Contains(string(out), "(commit "+head) {
		t.Errorf("%s --version: %q, %v; want its version and commit %s", native, out, err, head)
	}
}

// readSums reads a SHA256SUMS file: file name to hexadecimal sum.
func readSums(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sums := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok {
			t.Fatalf("%s: line %q is not 'SUM  NAME'", path, sc.Text())
		}
		sums[name] = sum
	}
	return sums
}
