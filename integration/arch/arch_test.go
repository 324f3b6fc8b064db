package arch

// Proof on real kernels of other architectures: Debian's kernels for arm64
// and mips64el (whose signal numbers are not x86's) boot under qemu-system
// with an initramfs of busybox, the release binary of reaper for that
// architecture, and testdata/init, which runs the cases and reports
// on the console. qemu-user is no test bed: it emulates neither
// PR_SET_CHILD_SUBREAPER nor clone3. Emulation is slow and its timings
// mean nothing: the cases check behaviour alone.

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/reaper-init/reaper/integration/itest"
)

// archMachine is an architecture whose kernel the test boots.
type archMachine struct {
	debian string   // Debian's name: the directory of .ci/kernels' cache
	target string   // the release target (.ci/release)
	qemu   string   // the emulator (Debian's qemu-system-arm, qemu-system-mips)
	args   []string // its machine; the console is the first serial port
	uname  string   // what uname -m says in it
}

var archMachines = []archMachine{
	{debian: "arm64", target: "arm64", qemu: "qemu-system-aarch64",
		args: []string{"-M", "virt", "-cpu", "cortex-a57", "-append", "console=ttyAMA0 quiet panic=-1"}, uname: "aarch64"},
	{debian: "mips64el", target: "mips64le", qemu: "qemu-system-mips64el",
		args: []string{"-M", "malta", "-cpu", "5KEc", "-vga", "none", "-append", "console=ttyS0 quiet panic=-1"}, uname: "mips64"},
}

// archGoTests are the Go tests run in the machine, built for its
// architecture: those of the packages that hold per-architecture values
// (signal numbers, signal sets, wait statuses, /proc's masks).
var archGoTests = []struct{ pkg, run string }{
	{"signals", "."},
	{"reaper/exitcode", "."},
	{"reaper/procfs", "StatusMask"},
	{"reaper/spawn", "Trampoline|Mask"},
	{"reaper/internal/supervisor", "^TestFatalUncaughtMatchesTheRuntime$"},
}

// archCases are the cases testdata/init runs, each of which must
// report.
var archCases = []string{"demo/cgroup=on", "demo/cgroup=off", "escapee/cgroup=on", "escapee/cgroup=off",
	"pid1", "forward", "names", "exit-status", "stop-signal", "rewrite"}

// archCache is where .ci/kernels keeps the kernels and busyboxes.
func archCache() string {
	if dir := os.Getenv("REAPER_ARCH_CACHE"); dir != "" {
		return dir
	}
	return "/var/cache/reaper-ci/arch"
}

func TestArchKernels(t *testing.T) {
	t.Parallel() // with the other slow ones: most of its time is the emulator's
	for _, m := range archMachines {
		t.Run(m.target, func(t *testing.T) {
			t.Parallel()
			kernel := filepath.Join(archCache(), m.debian, "vmlinuz")
			busybox := filepath.Join(archCache(), m.debian, "busybox")
			for _, f := range []string{kernel, busybox} {
				if _, err := os.Stat(f); err != nil {
					itest.Skip(t, "no %s: .ci/kernels fetches it (%v)", f, err)
				}
			}
			if _, err := exec.LookPath(m.qemu); err != nil {
				itest.Skip(t, "no %s: .ci/kernels installs it", m.qemu)
			}
			console := bootArch(t, m, archInitramfs(t, m, busybox), kernel)
			checkArchConsole(t, m, console)
		})
	}
}

// archInitramfs writes the machine's initramfs and returns its path:
// busybox, the release binary as /bin/reaper, the Go tests, the init and
// trapper scripts.
func archInitramfs(t *testing.T, m archMachine, busybox string) string {
	t.Helper()
	dir := t.TempDir()
	var files []cpioFile
	add := func(name, src string) {
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, cpioFile{name: name, mode: 0o100755, data: data})
	}
	for _, d := range []string{"bin", "dev", "proc", "sys", "tmp"} {
		files = append(files, cpioFile{name: d, mode: 0o40755})
	}
	add("init", "testdata/init")
	add("bin/trapper", "testdata/trapper")
	add("bin/busybox", busybox)
	files = append(files, cpioFile{name: "bin/sh", mode: 0o120777, data: []byte("busybox")})
	add("bin/reaper", filepath.Join(releaseDir(t), "reaper-linux-"+m.target))
	var list strings.Builder
	for _, gt := range archGoTests {
		name := filepath.Base(gt.pkg) + ".test"
		add("bin/"+name, crossTest(t, m.target, gt.pkg, filepath.Join(dir, name)))
		fmt.Fprintf(&list, "%s %s\n", name, gt.run)
	}
	files = append(files, cpioFile{name: "tests", mode: 0o100644, data: []byte(list.String())})
	path := filepath.Join(dir, "initrd.gz")
	if err := writeInitramfs(path, files); err != nil {
		t.Fatal(err)
	}
	return path
}

// crossTest builds the tests of pkg for the release target goarch into
// out, as .ci/release builds (the same build cache).
func crossTest(t *testing.T, goarch, pkg, out string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "test", "-c", "-o", out, "./"+pkg)
	cmd.Dir = itest.RepoRoot(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go test -c %s for %s: %v\n%s", pkg, goarch, err, b)
	}
	return out
}

// bootArch boots the kernel with the initramfs, and returns what the
// console showed once the machine powered off.
func bootArch(t *testing.T, m archMachine, initrd, kernel string) string {
	t.Helper()
	// Emulation on a busy machine is slow: the deadline only ends a
	// machine that hangs.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	args := append([]string{"-smp", "1", "-m", "512", "-nographic", "-no-reboot", "-nic", "none",
		"-kernel", kernel, "-initrd", initrd}, m.args...)
	cmd := exec.CommandContext(ctx, m.qemu, args...)
	var console bytes.Buffer
	cmd.Stdout, cmd.Stderr = &console, &console
	began := time.Now()
	err := cmd.Run()
	t.Logf("%s: booted, ran the cases, powered off in %v (emulated: no figure)", m.qemu, time.Since(began).Round(time.Second))
	if err != nil {
		t.Errorf("%s: %v (deadline: %v)\n%s", m.qemu, err, ctx.Err(), itest.Tail(console.String(), 60))
	}
	return console.String()
}

// archLine is one report of testdata/init.
var archLine = regexp.MustCompile(`^ARCH (info|begin|FAIL|done|out|end)(?: (\S+))?(?: (.*))?$`)

// checkArchConsole reads the console: each case must be done, with no
// failure, and the machine must be what it should be.
func checkArchConsole(t *testing.T, m archMachine, console string) {
	t.Helper()
	info := map[string]string{}
	done := map[string]int{}
	failed := map[string][]string{}
	var last string
	ended := false
	sc := bufio.NewScanner(strings.NewReader(console))
	for sc.Scan() {
		f := archLine.FindStringSubmatch(strings.TrimRight(sc.Text(), "\r"))
		if f == nil {
			continue
		}
		switch f[1] {
		case "info":
			info[f[2]] = f[3]
		case "begin":
			last = f[2]
		case "FAIL", "out":
			c := strings.TrimSuffix(f[2], ":")
			failed[c] = append(failed[c], f[3])
		case "done":
			done[f[2]], _ = strconv.Atoi(f[3])
		case "end":
			ended = true
		}
	}
	if info["machine"] != m.uname {
		t.Errorf("uname -m in the machine: %q, want %q", info["machine"], m.uname)
	}
	wantVersion := "reaper version "
	if v := info["version"]; !strings.HasPrefix(v, wantVersion) || !strings.Contains(v, "(commit "+itest.GitHead(t)) ||
		!strings.HasSuffix(v, ", linux/"+m.target+")") {
		t.Errorf("reaper --version in the machine: %q, want its version, commit %s and linux/%s", v, itest.GitHead(t), m.target)
	}
	t.Logf("kernel %s, SIGRTMAX %s", info["kernel"], info["rtmax"])
	cases := append([]string{}, archCases...)
	for _, gt := range archGoTests {
		cases = append(cases, "go/"+filepath.Base(gt.pkg)+".test")
	}
	for _, c := range cases {
		t.Run(c, func(t *testing.T) {
			for _, f := range failed[c] {
				t.Error(f)
			}
			if _, ok := done[c]; !ok {
				t.Errorf("did not run to its end (the last case begun: %s)", last)
			} else if done[c] == 0 {
				t.Error("checked nothing")
			}
		})
	}
	if !ended {
		t.Errorf("the init did not end its cases (the last begun: %s); the console's end:\n%s", last, itest.Tail(console, 40))
	}
}

// cpioFile is a member of an initramfs.
type cpioFile struct {
	name string
	mode uint32 // type and permissions, as in st_mode
	data []byte // the contents, or a symbolic link's target
}

// writeInitramfs writes files as a gzip'd cpio archive in the "newc"
// format, which the kernel unpacks into its root file system.
func writeInitramfs(path string, files []cpioFile) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	z := gzip.NewWriter(f)
	for i, file := range append(files, cpioFile{name: "TRAILER!!!"}) {
		if err := writeCpio(z, i+1, file); err != nil {
			return err
		}
	}
	if err := z.Close(); err != nil {
		return err
	}
	return f.Close()
}

// writeCpio writes one newc member: its header, name and data, each padded
// to four bytes.
func writeCpio(w io.Writer, ino int, f cpioFile) error {
	nlink := 1
	if f.mode&0o40000 != 0 {
		nlink = 2
	}
	// magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor,
	// devminor, rdevmajor, rdevminor, namesize, check
	header := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		ino, f.mode, 0, 0, nlink, 0, len(f.data), 0, 0, 0, 0, len(f.name)+1, 0)
	var b bytes.Buffer
	b.WriteString(header)
	b.WriteString(f.name)
	b.WriteByte(0)
	pad4(&b)
	b.Write(f.data)
	pad4(&b)
	_, err := w.Write(b.Bytes())
	return err
}

// pad4 pads b with zeros to a multiple of four bytes.
func pad4(b *bytes.Buffer) {
	for b.Len()%4 != 0 {
		b.WriteByte(0)
	}
}
