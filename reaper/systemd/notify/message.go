package notify

import (
	"slices"
	"strings"
)

// mainPIDKeys are the assignments that would make another process the
// unit's main process.
var mainPIDKeys = []string{"MAINPID", "MAINPIDFD", "MAINPIDFDID"}

// withoutMainPID returns msg without its MAINPID=, MAINPIDFD= and
// MAINPIDFDID= lines, and msg itself when it has none. removed reports
// whether a line was removed, pidfd whether one was MAINPIDFD=.
func withoutMainPID(msg []byte) (out []byte, removed, pidfd bool) {
	if !strings.Contains(string(msg), "MAINPID") {
		return msg, false, false
	}
	lines := strings.Split(string(msg), "\n")
	kept := lines[:0]
	for _, line := range lines {
		key, _, _ := strings.Cut(line, "=")
		if slices.Contains(mainPIDKeys, key) {
			removed = true
			pidfd = pidfd || key == "MAINPIDFD"
			continue
		}
		kept = append(kept, line)
	}
	if !removed {
		return msg, false, false
	}
	return []byte(strings.Join(kept, "\n")), true, pidfd
}

// empty reports whether msg holds no assignment: systemd skips empty lines.
func empty(msg []byte) bool {
	return strings.Trim(string(msg), "\n") == ""
}
