package reaper

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"syscall"
)

// inheritedIgnored returns the signals whose disposition is SIG_IGN right
// now, from SigIgn in /proc/self/status. Read at start-up, before reaper
// installs handlers of its own, it tells which signals reaper's caller left
// ignored, where the Go runtime kept them so: SIGHUP and SIGINT (as
// signal.Ignored also reports), and the job-control signals SIGTSTP, SIGTTIN,
// SIGTTOU and SIGCONT, for which the runtime installs no handler of its own.
// For the other signals the runtime has already replaced an inherited
// SIG_IGN with its handler before any Go code runs; nothing can recover it.
func inheritedIgnored() map[syscall.Signal]bool {
	data, err := os.ReadFile(procRoot + "/self/status")
	if err != nil {
		return nil
	}
	mask, ok := statusMask(data, "SigIgn:")
	if !ok {
		return nil
	}
	ignored := map[syscall.Signal]bool{}
	for sig := syscall.Signal(1); sig <= 64; sig++ {
		if mask&(1<<(sig-1)) != 0 {
			ignored[sig] = true
		}
	}
	return ignored
}

// statusMask reads a hexadecimal signal mask line such as "SigIgn:
// 0000000000001000" from /proc/PID/status.
func statusMask(status []byte, key string) (uint64, bool) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.HasPrefix(line, []byte(key)) {
			continue
		}
		v, err := strconv.ParseUint(string(bytes.TrimSpace(line[len(key):])), 16, 64)
		return v, err == nil
	}
	return 0, false
}
