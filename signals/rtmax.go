//go:build !(mips || mipsle || mips64 || mips64le)

package signals

// rtMax is SIGRTMAX: the kernel's _NSIG, 64 signals, on every architecture
// but mips. golang.org/x/sys/unix exports no SIGRTMAX.
const rtMax = 64
