package reaper

import (
	"errors"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// errGone means a process exited, or its pid now names another process.
var errGone = errors.New("process is gone")

// handle refers to one descendant in a way that survives pid reuse: a pidfd
// opened after checking that the pid still names the process a walk of the
// tree found. Where pidfds are missing (old kernels, or no descriptors left)
// fd is -1 and every signal repeats the identity check before kill(2).
type handle struct {
	process
	fd int
}

// openHandle opens a handle on p, a process found by walking the tree below
// self. It returns errGone when p has exited since, or is no longer below
// self.
func openHandle(p process, self int) (*handle, error) {
	fd, err := unix.PidfdOpen(p.PID, 0)
	switch {
	case errors.Is(err, unix.ESRCH):
		return nil, errGone
	case err != nil:
		fd = -1 // ENOSYS, EMFILE, ...: fall back to kill(2) with identity checks
	}
	// pidfd_open took whatever process held the pid at that moment. If the
	// same pid still carries p's start time now, that process was p: a pid
	// is not reused while its process lives. A descendant stays one (orphans
	// move up to reaper, the subreaper), but the check is cheap.
	if !sameProcess(p) || !below(p.PID, self) {
		if fd >= 0 {
			unix.Close(fd)
		}
		return nil, errGone
	}
	return &handle{process: p, fd: fd}, nil
}

// below reports whether pid's chain of parents reaches ancestor.
func below(pid, ancestor int) bool {
	for depth := 0; depth < 4096 && pid > 1; depth++ {
		p, err := readProcess(pid)
		if err != nil {
			return false
		}
		if p.PPID == ancestor {
			return true
		}
		pid = p.PPID
	}
	return false
}

// sameProcess reports whether p.PID still names the process p.
func sameProcess(p process) bool {
	now, err := readProcess(p.PID)
	return err == nil && now.Start == p.Start && now.State != 'Z'
}

// signal sends sig to the process. It returns errGone when the process has
// exited.
func (h *handle) signal(sig syscall.Signal) error {
	var err error
	if h.fd >= 0 {
		err = unix.PidfdSendSignal(h.fd, sig, nil, 0)
	} else if !sameProcess(h.process) {
		return errGone
	} else {
		err = unix.Kill(h.PID, sig)
	}
	if errors.Is(err, unix.ESRCH) {
		return errGone
	}
	if err != nil {
		return fmt.Errorf("signal pid %d: %w", h.PID, err)
	}
	return nil
}

// close releases the pidfd.
func (h *handle) close() {
	if h.fd >= 0 {
		unix.Close(h.fd)
		h.fd = -1
	}
}
