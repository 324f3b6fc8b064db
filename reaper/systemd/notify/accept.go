package notify

import (
	"golang.org/x/sys/unix"

	"github.com/reaper-init/reaper/reaper/procfs"
)

// Accept decides whether a notification from sender (as the kernel attests
// it) is relayed: when the sender descends from reaper (self), or, where
// /proc shows another PID namespace (ownProc false) and cannot tell, when
// it is COMMAND (cmd, 0 once reaped) or in COMMAND's process group. A
// sender that is gone before its datagram is read (systemd-notify in a
// script exits at once) can no longer be placed: it is relayed when its
// user is reaper's (euid), who could act as reaper anyway. Never on the
// word of another user: anyone in the network namespace can find the
// relay's abstract name, and a process that shares COMMAND's user (nobody,
// www-data) is not COMMAND's.
func Accept(sender unix.Ucred, self, cmd int, ownProc bool, euid int) bool {
	pid := int(sender.Pid)
	if pid <= 0 {
		return false
	}
	if ownProc && procfs.Descends(pid, self) {
		return true
	}
	if !ownProc && cmd != 0 {
		if pgid, err := unix.Getpgid(pid); pid == cmd || err == nil && pgid == cmd {
			return true
		}
	}
	gone := unix.Kill(pid, 0) == unix.ESRCH
	return gone && int(sender.Uid) == euid
}
