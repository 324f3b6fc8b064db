package reaper

import "golang.org/x/sys/unix"

// ownsTerminal reports whether fd 0 is a terminal whose foreground process
// group is reaper's: only then does COMMAND get the foreground (a reaper
// started in the background must not take the terminal from the shell). It
// asks the terminal driver only when fd 0 is a character device, so that a
// run with a pipe, a file or a socket on stdin makes no terminal ioctl.
func ownsTerminal() bool {
	var st unix.Stat_t
	if err := unix.Fstat(0, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR {
		return false
	}
	fg, err := unix.IoctlGetInt(0, unix.TIOCGPGRP)
	return err == nil && fg == unix.Getpgrp()
}
