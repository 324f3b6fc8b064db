package tree

import (
	"syscall"
	"testing"
)

// startSleep starts sleep 100 as a child of the test's, killed and reaped
// when the test ends.
func startSleep(t *testing.T) (int, error) {
	t.Helper()
	pid, err := syscall.ForkExec("/bin/sleep", []string{"sleep", "100"}, &syscall.ProcAttr{Files: []uintptr{0, 1, 2}})
	if err != nil {
		return 0, err
	}
	t.Cleanup(func() {
		syscall.Kill(pid, syscall.SIGKILL)
		var ws syscall.WaitStatus
		syscall.Wait4(pid, &ws, 0, nil)
	})
	return pid, nil
}
