//go:build mips || mipsle || mips64 || mips64le

package signals

// rtMax is SIGRTMAX on mips, where the kernel has 128 signals (_NSIG): the
// C library's SIGRTMAX is 127 (glibc's and musl's), because a wait status
// has 7 bits for the signal that ended a process, and a death by 128 would
// read as no death at all. golang.org/x/sys/unix exports no SIGRTMAX.
const rtMax = 127
