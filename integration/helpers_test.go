package integration

// Small helpers the tests share.

import (
	"net"
	"testing"
)

// freeAddr returns a loopback address with a port nobody listens on.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// heldPort listens on a free TCP port of 127.0.0.1 until release is
// called or the test ends, and returns the port: a port held by the test
// process itself.
func heldPort(t testing.TB) (port string, release func()) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	release = func() { l.Close() }
	t.Cleanup(release)
	return portOf(l.Addr().String()), release
}

// portOf returns the port of a host:port address.
func portOf(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}
