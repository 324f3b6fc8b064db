package itest

import (
	"debug/buildinfo"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime/debug"
	"strings"
	"testing"
)

// StaticELF checks that path is a static, stripped executable: no program
// interpreter, no dynamic section, no symbol table.
func StaticELF(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, p := range f.Progs {
		switch p.Type {
		case elf.PT_INTERP:
			return errors.New("dynamically linked: it has a PT_INTERP program header")
		case elf.PT_DYNAMIC:
			return errors.New("it has a dynamic section")
		}
	}
	if f.Section(".symtab") != nil {
		return errors.New("not stripped: it has a .symtab")
	}
	return nil
}

// DocumentedBuild checks the build information of the reaper at path: cgo
// off, and the documented linker flags (async preemption off).
func DocumentedBuild(path string) error {
	info, err := buildinfo.ReadFile(path)
	if err != nil {
		return err
	}
	if cgo := SettingOf(info, "CGO_ENABLED"); cgo != "0" {
		return fmt.Errorf("CGO_ENABLED=%q, want 0", cgo)
	}
	if ld := SettingOf(info, "-ldflags"); !strings.Contains(ld, "asyncpreemptoff=1") || !strings.Contains(ld, "-s -w") {
		return fmt.Errorf("-ldflags %q, want the documented ones", ld)
	}
	return nil
}

// SettingOf returns the value of a build setting (-ldflags, CGO_ENABLED)
// of a binary's build information, "" when it has none.
func SettingOf(info *debug.BuildInfo, key string) string {
	for _, s := range info.Settings {
		if s.Key == key {
			return s.Value
		}
	}
	return ""
}

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

// GitHead returns the commit the checkout is at, as .ci/release stamps it.
func GitHead(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("git", "-C", RepoRoot(t), "rev-parse", "HEAD").Output()
	if err != nil {
		Skip(t, "the release stamps git's commit: not a git checkout (%v)", err)
	}
	return strings.TrimSpace(string(out))
}

// GoEnv returns a go env variable.
func GoEnv(t testing.TB, name string) string {
	t.Helper()
	out, err := exec.Command("go", "env", name).Output()
	if err != nil {
		t.Fatalf("go env %s: %v", name, err)
	}
	return strings.TrimSpace(string(out))
}

// MustRead returns the content of the file at path, failing the test when
// it cannot be read.
func MustRead(t testing.TB, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// Tail is the end of s, for failures.
func Tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
