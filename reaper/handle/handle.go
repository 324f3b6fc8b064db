// Package handle refers to processes in a way that survives pid reuse, and
// tells from the kernel whether they still live.
//
// A Handle is a pidfd wherever the kernel has them. The one exception is a
// child of reaper's own that reaper has not reaped: its pid stays reserved
// until reaper's event loop (the only caller of wait4) reaps it, so kill(2)
// reaches that process and no other; such a handle needs no descriptor,
// which counts when a thousand orphans are torn down. Where pidfds are
// missing (Linux before 5.3, or no descriptor left), only children can be
// handled: a deeper descendant is reached once it is orphaned to reaper.
//
// Liveness comes from the pidfd (readable once the process has exited) or
// from waitid(WNOWAIT), never from the state letter of /proc/PID/stat,
// which says Z for a live process whose main thread has exited.
package handle

import (
	"errors"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/reaper-init/reaper/reaper/procfs"
)

// ErrGone means the process has exited.
var ErrGone = errors.New("process is gone")

// Handle refers to one process (or, for Group, one process group).
type Handle struct {
	PID   int
	fd    int  // pidfd, or -1
	child bool // an unreaped child of the calling process: kill(2) is safe
	group bool // the process group PID, whose leader is an unreaped child
	// stat is what /proc/PID/stat said when the handle was opened, if it
	// was read then (see Remember).
	stat *procfs.Process
}

// Open opens a handle on pid for the process check describes: check
// reads /proc after the pidfd is open, and the pidfd must not report an
// exit after that. Then both describe the process the pidfd refers to,
// alive, since a pid is not reused while its process lives. check returns
// nil when the process is the one wanted, ErrGone when it is not, or
// another error (it cannot tell); Open returns ErrGone when the process
// has exited, check's other error when it lives, and an error of its own
// when no pidfd can be had.
func Open(pid int, check func() error) (*Handle, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	switch {
	case errors.Is(err, unix.ESRCH):
		return nil, ErrGone
	case err != nil:
		return nil, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	h := &Handle{PID: pid, fd: fd}
	err = check()
	if h.Exited() {
		err = ErrGone
	}
	if err != nil {
		h.Close()
		return nil, err
	}
	return h, nil
}

// Child returns a handle on pid when pid is a child of the calling process
// that has not exited, and reports whether it is one. It reads nothing in
// /proc: waitid, with WNOWAIT so that it never reaps (the event loop's wait4
// stays the only reaper), tells whether pid is a child that has not exited,
// whose pid is then reserved until it is reaped. A child whose main thread
// has exited while other threads run has not exited. For any other pid it
// costs one failed waitid.
func Child(pid int) (*Handle, bool) {
	if !unreapedLiveChild(pid) {
		return nil, false
	}
	return &Handle{PID: pid, fd: -1, child: true}, true
}

// Own returns a handle on pid, a child of the calling process, with the
// pidfd fd that clone returned for it (-1 when it returned none).
func Own(pid, fd int) *Handle {
	return &Handle{PID: pid, fd: fd, child: true}
}

// Group returns a handle on process group pgid, whose leader must be a
// child of the calling process not reaped yet: until then the group id
// cannot be reused. It is what reaper can still signal when it cannot see
// its descendants.
func Group(pgid int) *Handle {
	return &Handle{PID: pgid, fd: -1, child: true, group: true}
}

// unreapedLiveChild reports whether pid is a child of the calling process
// that has not exited.
func unreapedLiveChild(pid int) bool {
	var info unix.Siginfo
	err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
	// Signo 0: nothing to report, the child lives; SIGCHLD: it has exited.
	return err == nil && info.Signo == 0
}

// IsChild reports whether the handle's pid is an unreaped child of the
// calling process's (for Group, the group's leader).
func (h *Handle) IsChild() bool { return h.child }

// IsGroup reports whether the handle is a process group's (see Group).
func (h *Handle) IsGroup() bool { return h.group }

// FD returns the pidfd, or -1 when the handle has none.
func (h *Handle) FD() int { return h.fd }

// Signal sends sig. It returns ErrGone when the process has exited.
func (h *Handle) Signal(sig syscall.Signal) error {
	var err error
	switch {
	case h.fd >= 0:
		err = unix.PidfdSendSignal(h.fd, sig, nil, 0)
	case h.group:
		err = unix.Kill(-h.PID, sig)
	case h.child:
		err = unix.Kill(h.PID, sig)
	default:
		return ErrGone // closed
	}
	if errors.Is(err, unix.ESRCH) {
		return ErrGone
	}
	if err != nil {
		return fmt.Errorf("signal pid %d: %w", h.PID, err)
	}
	return nil
}

// Exited reports whether the process has exited, as the kernel says.
func (h *Handle) Exited() bool {
	if h.fd >= 0 {
		fds := []unix.PollFd{{Fd: int32(h.fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 0)
		return err == nil && n > 0
	}
	if h.child {
		return !unreapedLiveChild(h.PID)
	}
	return true
}

// Remember keeps p, read from /proc/PID/stat while the handle was open and
// its process alive, for Stat and PGID to answer without reading again.
func (h *Handle) Remember(p procfs.Process) { h.stat = &p }

// PGID returns the process's group id: the one /proc said when the handle
// was opened (see Remember), or getpgid(2), which reads no /proc file.
func (h *Handle) PGID() (int, error) {
	switch {
	case h.group:
		return h.PID, nil
	case h.stat != nil:
		return h.stat.PGID, nil
	}
	pgid, err := unix.Getpgid(h.PID)
	if err == nil && h.Exited() {
		return 0, ErrGone // the pid may name another process by now
	}
	return pgid, err
}

// Stat returns the process's /proc/PID/stat: the one remembered (see
// Remember), or one read now, checked after the read against the process's
// exit, so that what it read describes this process.
func (h *Handle) Stat() (procfs.Process, error) {
	if h.stat != nil {
		return *h.stat, nil
	}
	p, err := procfs.Stat(h.PID)
	if err == nil && h.Exited() {
		return procfs.Process{}, ErrGone
	}
	return p, err
}

// Stopped reports whether the process is stopped now (SIGSTOP, Ctrl-Z:
// state T), as /proc reads it at the call, never from a remembered stat.
func (h *Handle) Stopped() bool {
	p, err := procfs.Stat(h.PID)
	return err == nil && !h.Exited() && p.State == 'T'
}

// Close releases the pidfd.
func (h *Handle) Close() {
	if h.fd >= 0 {
		unix.Close(h.fd)
		h.fd = -1
	}
}
