package reaper

import "golang.org/x/sys/unix"

// stdinIsTerminal reports whether fd 0 is a terminal. It asks the terminal
// driver only when fd 0 is a character device, so that a run with a pipe,
// a file or a socket on stdin makes no terminal ioctl at all.
func stdinIsTerminal() bool {
	var st unix.Stat_t
	if err := unix.Fstat(0, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR {
		return false
	}
	_, err := unix.IoctlGetTermios(0, unix.TCGETS)
	return err == nil
}
