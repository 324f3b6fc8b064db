package integration

// Small helpers the tests share.

import (
	"bufio"
	"net"
	"os/exec"
	"testing"
)

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

// startReady starts argv, killed when the test ends, and waits for the
// first line it writes to stdout, which must be ready.
func startReady(t testing.TB, ready string, argv ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || line != ready+"\n" {
		t.Fatalf("%v wrote %q (%v), want %q", argv, line, err, ready)
	}
	return cmd
}
