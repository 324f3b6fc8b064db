package reaper

import (
	"errors"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// errGone means a process exited, or its pid now names another process.
var errGone = errors.New("process is gone")

// errHidden means a process lives but /proc will not show it: /proc mounted
// with hidepid=2 hides other users' processes (a setuid program below an
// unprivileged reaper, say).
var errHidden = errors.New("process cannot be read")

// handle refers to one descendant in a way that survives pid reuse.
//
// For a child of reaper's own (child set) that is the pid itself: a child's
// pid stays reserved until its parent reaps it, and only reaper's event
// loop reaps, so kill(2) reaches that process and no other until the loop
// reaps it (teardown marks every reaped pid exited, and signals no exited
// process). This saves a pidfd per child, which counts when a thousand
// orphans are torn down. For any other descendant it is a pidfd,
// opened and checked against the process the walk found. Where pidfds are
// missing (old kernels, or no descriptors left) fd is -1 and every signal
// repeats the identity check before kill(2).
//
// A lazy handle (see openChild) is a child of reaper's whose /proc/PID/stat
// was not read: of its process only PID, PPID and State are known until
// load reads the rest.
type handle struct {
	process
	fd    int
	child bool
	lazy  bool
}

// openChild opens a lazy handle on pid when it is a living child of root,
// the calling process, and reports whether it is one. It reads nothing in
// /proc: /proc/PID/stat is what a teardown costs most per process, since
// the kernel must make a process's /proc entries before they can be read,
// and drop them again at its exit. waitid, with WNOWAIT so that it never
// reaps (the event loop's wait4 stays the only reaper, and runs on the
// same goroutine as the walks), says instead whether pid is a child that
// has not exited, whose pid is then reserved until reaper reaps it; and
// whether it stopped or continued since the event loop last drained wait4.
// Otherwise stopped says whether that drain saw it stopped (see
// supervisor.childStopped). For any other pid it costs one failed waitid.
func openChild(pid, root int, stopped bool) (*handle, bool) {
	var info unix.Siginfo
	err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WSTOPPED|unix.WCONTINUED|unix.WNOHANG|unix.WNOWAIT, nil)
	if err != nil { // not a child of reaper's
		return nil, false
	}
	switch {
	case info.Signo == 0: // nothing new to report
	case info.Code == cldStopped:
		stopped = true
	case info.Code == cldContinued:
		stopped = false
	default: // exited: a zombie, for the event loop to reap
		return nil, false
	}
	state := byte('S') // a guess, but for what matters: stopped or not
	if stopped {
		state = 'T'
	}
	return &handle{process: process{PID: pid, PPID: root, State: state}, fd: -1, child: true, lazy: true}, true
}

// si_code values of a SIGCHLD siginfo (CLD_STOPPED, CLD_CONTINUED).
const (
	cldStopped   = 5
	cldContinued = 6
)

// load reads what a lazy handle does not know yet from /proc/PID/stat, and
// reports whether it knows it now.
func (h *handle) load() bool {
	if !h.lazy {
		return true
	}
	p, err := readProcess(h.PID)
	if err != nil {
		return false
	}
	h.process, h.lazy = p, false
	return true
}

// openHandle opens a handle on the process with this pid, which a walk of
// the tree below root found among parent's children. It returns errGone
// when that process has exited since, or is not below root.
//
// The pidfd comes first, the identity after: pidfd_open takes whatever
// process holds the pid at that moment; /proc/PID/stat, read next, describes
// the one holding it then; if the pidfd's process has not exited after that
// read, the two are the same process, since a pid is not reused while its
// process lives. Without a pidfd, handle.signal checks the start time again
// before each kill(2).
func openHandle(pid, parent, root int) (*handle, error) {
	h := &handle{fd: -1, child: parent == root}
	var err error
	if !h.child {
		h.fd, err = unix.PidfdOpen(pid, 0)
		switch {
		case errors.Is(err, unix.ESRCH):
			return nil, errGone
		case err != nil:
			h.fd = -1 // ENOSYS, EMFILE, ...: fall back to kill(2) with identity checks
		}
	}
	if h.process, err = readProcess(pid); err != nil {
		return h.unreadable(pid, root)
	}
	if h.State == 'Z' || h.exited() {
		h.close()
		return nil, errGone
	}
	// A descendant stays one: orphans move up to root, the subreaper. The
	// parent confirms it cheaply (the one the walk saw, or root); the chain
	// of parents is followed only when neither.
	if h.PPID != parent && h.PPID != root && !below(pid, root) {
		h.close()
		return nil, errGone
	}
	return h, nil
}

// openChecked opens a handle on pid for a process that belongs, as a test
// read from /proc says. The pidfd comes first; /proc/PID/stat and belongs
// are read after it, and the pidfd must not report an exit after both: then
// they all describe the process the pidfd refers to, alive. Where there is
// no pidfd, fd is -1 and handle.signal checks the start time before kill(2).
func openChecked(pid int, belongs func() bool) (*handle, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	switch {
	case errors.Is(err, unix.ESRCH):
		return nil, errGone
	case err != nil:
		fd = -1
	}
	h := &handle{fd: fd}
	if h.process, err = readProcess(pid); err != nil || h.State == 'Z' || !belongs() || h.exited() {
		h.close()
		return nil, errGone
	}
	return h, nil
}

// unreadable decides what to do with a listed process /proc does not show.
// A child of root that still exists can be signalled safely all the same
// (its pid is reserved until root reaps it); another process cannot be
// told from a stranger that took its pid: errHidden, for the caller to
// report.
func (h *handle) unreadable(pid, root int) (*handle, error) {
	switch {
	case h.child && unix.Kill(pid, 0) == nil:
		h.process = process{PID: pid, PPID: root, State: '?', Comm: "?", Threads: 1}
		return h, nil
	case h.fd >= 0 && !h.exited():
		h.close()
		return nil, errHidden
	}
	h.close()
	return nil, errGone
}

// exited reports whether the pidfd says its process has exited.
func (h *handle) exited() bool {
	if h.fd < 0 {
		return false
	}
	fds := []unix.PollFd{{Fd: int32(h.fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n > 0
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

// current rereads p and reports whether p.PID still names the process p,
// alive.
func current(p process) bool {
	now, err := readProcess(p.PID)
	return err == nil && now.Start == p.Start && now.State != 'Z'
}

// signal sends sig to the process. It returns errGone when the process has
// exited.
func (h *handle) signal(sig syscall.Signal) error {
	var err error
	switch {
	case h.fd >= 0:
		err = unix.PidfdSendSignal(h.fd, sig, nil, 0)
	case h.child:
		err = unix.Kill(h.PID, sig)
	default:
		if !current(h.process) {
			return errGone
		}
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
