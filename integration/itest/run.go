package itest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sync/atomic"
	"syscall"
	"testing"
)

// RunReaper runs reaper directly, without the harness, for runs that start
// nothing that could outlive it, and returns its exit code, stdout and
// stderr.
func RunReaper(t testing.TB, env []string, args ...string) (int, string, string) {
	t.Helper()
	return RunBinary(t, Bin().Reaper, env, args...)
}

// RunBinary is runReaper for another build of reaper.
func RunBinary(t testing.TB, binary string, env []string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Deadline)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code, ok := ShellStatus(err)
	if !ok {
		t.Fatal(err)
	}
	return code, stdout.String(), stderr.String()
}

// ShellStatus is the status a shell would show for a command that ended
// with err (cmd.Run's): its exit code, or 128+N when signal N ended it. It
// reports false for an error that is no exit status.
func ShellStatus(err error) (int, bool) {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, true
	case !errors.As(err, &ee):
		return 0, false
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal()), true
	}
	return ee.ExitCode(), true
}

// AsNobody runs reaper as user nobody (65534), without supplementary groups.
func AsNobody(t *testing.T) []string {
	t.Helper()
	RequireRoot(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		Skip(t, "setpriv (util-linux) is not installed")
	}
	return []string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", Bin().Reaper}
}

// AsNobodyRun runs argv as user nobody (65534), with no supplementary groups,
// and returns its combined output; it fails the test on a start error.
func AsNobodyRun(t *testing.T, env []string, argv ...string) (int, string) {
	t.Helper()
	RequireRoot(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		Skip(t, "setpriv (util-linux) is not installed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), Deadline)
	defer cancel()
	cmd := exec.CommandContext(ctx, "setpriv", append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", "--"}, argv...)...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	code, ok := ShellStatus(err)
	if !ok {
		t.Fatalf("%v: %v", argv, err)
	}
	return code, string(out)
}

var instanceSeq atomic.Int64

// InstanceName is unique to one test run: instances are host-wide. Its
// lock file goes when the test ends.
func InstanceName(t *testing.T) string {
	name := fmt.Sprintf("it-%d-%d", os.Getpid(), instanceSeq.Add(1))
	t.Cleanup(func() { os.Remove("/run/reaper/" + name + ".lock") })
	return name
}

// FreeAddr returns a loopback address with a port nobody listens on.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// HeldPort listens on a free TCP port of 127.0.0.1 until release is
// called or the test ends, and returns the port: a port held by the test
// process itself.
func HeldPort(t testing.TB) (port string, release func()) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	release = func() { l.Close() }
	t.Cleanup(release)
	return PortOf(l.Addr().String()), release
}

// PortOf returns the port of a host:port address.
func PortOf(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}
