package integration

// Small helpers the tests share.

import (
	"bufio"
	"os/exec"
	"testing"
)

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
