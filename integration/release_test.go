package integration

import (
	"bufio"
	"crypto/sha256"
	"debug/buildinfo"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// ReleaseTarget is one binary of .ci/release: a platform as container
// engines name it, less "linux/", and what its ELF header must say.
type ReleaseTarget struct {
	Target  string
	GOARCH  string
	GOARM   string
	machine elf.Machine
	class   elf.Class
	order   binary.ByteOrder
}

// ReleaseTargets are every Linux architecture Go supports, as .ci/release
// builds them.
var ReleaseTargets = []ReleaseTarget{
	{"386", "386", "", elf.EM_386, elf.ELFCLASS32, binary.LittleEndian},
	{"amd64", "amd64", "", elf.EM_X86_64, elf.ELFCLASS64, binary.LittleEndian},
	{"arm/v6", "arm", "6", elf.EM_ARM, elf.ELFCLASS32, binary.LittleEndian},
	{"arm/v7", "arm", "7", elf.EM_ARM, elf.ELFCLASS32, binary.LittleEndian},
	{"arm64", "arm64", "", elf.EM_AARCH64, elf.ELFCLASS64, binary.LittleEndian},
	{"loong64", "loong64", "", elf.EM_LOONGARCH, elf.ELFCLASS64, binary.LittleEndian},
	{"mips", "mips", "", elf.EM_MIPS, elf.ELFCLASS32, binary.BigEndian},
	{"mipsle", "mipsle", "", elf.EM_MIPS, elf.ELFCLASS32, binary.LittleEndian},
	{"mips64", "mips64", "", elf.EM_MIPS, elf.ELFCLASS64, binary.BigEndian},
	{"mips64le", "mips64le", "", elf.EM_MIPS, elf.ELFCLASS64, binary.LittleEndian},
	{"ppc64", "ppc64", "", elf.EM_PPC64, elf.ELFCLASS64, binary.BigEndian},
	{"ppc64le", "ppc64le", "", elf.EM_PPC64, elf.ELFCLASS64, binary.LittleEndian},
	{"riscv64", "riscv64", "", elf.EM_RISCV, elf.ELFCLASS64, binary.LittleEndian},
	{"s390x", "s390x", "", elf.EM_S390, elf.ELFCLASS64, binary.BigEndian},
}

// File is the name .ci/release gives the binary: reaper-linux-armv7.
func (r ReleaseTarget) File() string {
	return "reaper-linux-" + strings.ReplaceAll(r.Target, "/", "")
}

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
		release.dir = filepath.Join(filepath.Dir(Bin().Reaper), "dist")
		if out, err := exec.Command("../.ci/release", release.dir).CombinedOutput(); err != nil {
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
	head := GitHead(t)
	for _, r := range ReleaseTargets {
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
			if err := ELFOf(path, r); err != nil {
				t.Error(err)
			}
			if err := StaticELF(path); err != nil {
				t.Error(err)
			}
			if err := DocumentedBuild(path); err != nil {
				t.Error(err)
			}
			info, err := buildinfo.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if got := SettingOf(info, "GOARCH"); got != r.GOARCH {
				t.Errorf("GOARCH=%s, want %s", got, r.GOARCH)
			}
			if got := SettingOf(info, "GOARM"); r.GOARM != "" && got != r.GOARM {
				t.Errorf("GOARM=%s, want %s", got, r.GOARM)
			}
			if ld := SettingOf(info, "-ldflags"); !strings.Contains(ld, "-X=main.commit="+head) {
				t.Errorf("-ldflags %q: no -X=main.commit=%s", ld, head)
			}
		})
	}
	for name := range sums {
		t.Errorf("SHA256SUMS lists %s, which no target is", name)
	}
	native := filepath.Join(dir, "reaper-linux-amd64")
	out, err := exec.Command(native, "--version").Output()
	if want := "reaper version "; err != nil || !strings.HasPrefix(string(out), want) || !strings.Contains(string(out), "(commit "+head) {
		t.Errorf("%s --version: %q, %v; want its version and commit %s", native, out, err, head)
	}
}

// ELFOf checks that path is an executable of r's architecture.
func ELFOf(path string, r ReleaseTarget) error {
	f, err := elf.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if f.Machine != r.machine || f.Class != r.class || f.ByteOrder != r.order || f.Type != elf.ET_EXEC {
		return fmt.Errorf("%s: %v %v %v %v, want an executable of %v %v %v", path, f.Type, f.Machine, f.Class, f.ByteOrder, r.machine, r.class, r.order)
	}
	return nil
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

// GitHead returns the commit the checkout is at, as .ci/release stamps it.
func GitHead(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("git", "-C", RepoRoot(t), "rev-parse", "HEAD").Output()
	if err != nil {
		Skip(t, "the release stamps git's commit: not a git checkout (%v)", err)
	}
	return strings.TrimSpace(string(out))
}
