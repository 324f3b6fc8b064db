// Package token makes random names: a run's instance token, the relay's
// socket name. They need to be hard to guess, not secret keys: the kernel's
// random bytes, taken without blocking even early in boot.
package token

import (
	"encoding/hex"
	"time"

	"golang.org/x/sys/unix"
)

// New returns n random bytes in hex. It never blocks: before the kernel's
// pool is ready (early in boot) its bytes are less random, which a name
// that only needs to be hard to guess can take.
func New(n int) string {
	b := make([]byte, n)
	got, err := unix.Getrandom(b, unix.GRND_INSECURE)
	if err != nil { // GRND_INSECURE is Linux 5.6
		got, err = unix.Getrandom(b, unix.GRND_NONBLOCK)
	}
	if err != nil || got != n {
		now := uint64(time.Now().UnixNano())
		for i := range b {
			b[i] ^= byte(now >> (8 * (i % 8)))
		}
	}
	return hex.EncodeToString(b)
}
