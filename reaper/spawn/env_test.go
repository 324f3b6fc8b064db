package spawn

import (
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestTrampolineRoundTrip: what reaper asks of the trampoline is what the
// trampoline reads, a path with colons included; a value made for another
// parent is refused.
func TestTrampolineRoundTrip(t *testing.T) {
	want := trampoline{pidVars: []string{"LISTEN_PID", "WATCHDOG_PID"},
		ignore: []syscall.Signal{syscall.SIGHUP, syscall.SIGINT}, mask: 1<<(syscall.SIGUSR1-1) | 1<<63}
	env := want.env(nil, os.Getppid(), "/opt/a:b/server")
	_, value, _ := strings.Cut(env[0], "=")
	got, path, ok := parseTrampoline(value)
	if !ok || path != "/opt/a:b/server" || !slices.Equal(got.pidVars, want.pidVars) ||
		!slices.Equal(got.ignore, want.ignore) || got.mask != want.mask {
		t.Errorf("parsed %+v %q %v, want %+v", got, path, ok, want)
	}
	other := want.env(nil, os.Getppid()+1, "/bin/true")
	if _, value, _ := strings.Cut(other[0], "="); func() bool { _, _, ok := parseTrampoline(value); return ok }() {
		t.Error("a value made for another parent was taken")
	}
	if (trampoline{mask: 5}).needed() {
		t.Error("a mask alone needs no trampoline")
	}
}

// TestMaskBits: signals 1 to 64 round-trip through a kernel sigset.
func TestMaskBits(t *testing.T) {
	for _, bits := range []uint64{0, 1, 1 << 31, 1 << 32, 1 << 63, 0xdeadbeefcafef00d} {
		var set unix.Sigset_t
		setMaskBits(&set, bits)
		if got := maskBits(set); got != bits {
			t.Errorf("maskBits(setMaskBits(%#x)) = %#x", bits, got)
		}
	}
}
