package supervisor

import "golang.org/x/sys/unix"

// terminal is the controlling terminal on fd 0 when reaper runs in its
// foreground: COMMAND's group gets the foreground, follows job control
// through reaper, and the terminal goes back the way it was at the end.
//
// COMMAND stays in reaper's session, as a process group of its own made the
// foreground group (tini and a shell's jobs do the same), rather than in a
// new session with the terminal as its controlling terminal: a terminal is
// the controlling terminal of one session only, so that would take it from
// reaper's caller and break the caller's job control, and Ctrl-Z could no
// longer reach a shell that started reaper.
type terminal struct {
	fd      int
	pgrp    int           // reaper's own group: the foreground group reaper found
	termios *unix.Termios // the settings reaper found
}

// openTerminal returns the terminal on fd 0 when reaper's process group is
// its foreground group, nil otherwise. It asks the terminal driver only when
// fd 0 is a character device other than a memory device (/dev/null), so
// that a run with a pipe, a file, a socket or /dev/null on stdin makes no
// terminal ioctl at all.
func openTerminal() *terminal {
	var st unix.Stat_t
	if err := unix.Fstat(0, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || unix.Major(uint64(st.Rdev)) == 1 {
		return nil
	}
	fg, err := unix.IoctlGetInt(0, unix.TIOCGPGRP)
	if err != nil || fg != unix.Getpgrp() {
		return nil
	}
	t := &terminal{fd: 0, pgrp: fg}
	t.termios, _ = unix.IoctlGetTermios(0, unix.TCGETS)
	return t
}

// foreground returns the terminal's foreground process group, or 0.
func (t *terminal) foreground() int {
	pgrp, err := unix.IoctlGetInt(t.fd, unix.TIOCGPGRP)
	if err != nil {
		return 0
	}
	return pgrp
}

// giveTo makes pgrp the foreground group. reaper is then in a background
// group itself: the terminal driver allows that only because the calling
// thread, the event loop's, keeps SIGTTOU blocked (see spawn.BlockThreadSignals);
// otherwise it would answer with a SIGTTOU that reaper catches, and the call
// would fail and repeat for ever.
func (t *terminal) giveTo(pgrp int) error {
	return unix.IoctlSetPointerInt(t.fd, unix.TIOCSPGRP, pgrp)
}

// restore gives the terminal back to reaper's group with the settings
// reaper found, unless a live group other than reaper's has it: the shell
// that took it back meanwhile (reaper was put in the background), say. At
// the end every descendant is gone, so a foreground group of COMMAND's, or
// of a job COMMAND ran, or of a child whose exec failed, is empty.
func (t *terminal) restore() {
	fg := t.foreground()
	if fg == t.pgrp || (fg > 0 && unix.Kill(-fg, 0) != unix.ESRCH) {
		return
	}
	t.giveTo(t.pgrp)
	if t.termios != nil {
		unix.IoctlSetTermios(t.fd, unix.TCSETS, t.termios) // at once: waiting for output to drain could hang
	}
}
