package signals

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Sigset returns the signal set of sigs, as system calls take it. Its words
// are as wide as the architecture's: 32 bits on 386, arm, mips and mipsle.
func Sigset(sigs ...syscall.Signal) unix.Sigset_t {
	var set unix.Sigset_t
	for _, sig := range sigs {
		if sig >= 1 && sig <= RTMax {
			set.Val[(sig-1)/wordBits] |= 1 << ((sig - 1) % wordBits)
		}
	}
	return set
}

// Members returns the signals of set, 1 to RTMax, in order.
func Members(set unix.Sigset_t) []syscall.Signal {
	var sigs []syscall.Signal
	for sig := syscall.Signal(1); sig <= RTMax; sig++ {
		if set.Val[(sig-1)/wordBits]&(1<<((sig-1)%wordBits)) != 0 {
			sigs = append(sigs, sig)
		}
	}
	return sigs
}

// wordBits is the width of a word of unix.Sigset_t.
const wordBits = syscall.Signal(unsafe.Sizeof(unix.Sigset_t{}.Val[0]) * 8)

// KernelSigsetSize is the size of the kernel's sigset_t, which the raw
// rt_sigaction and rt_sigtimedwait take (anything else is EINVAL): one bit
// per signal up to SIGRTMAX, in whole 64-bit words, so 8 bytes, and 16 on
// mips, which has 128 signals. unix.Sigset_t is the C library's, and
// larger.
const KernelSigsetSize = uintptr(RTMax+63) / 64 * 8
