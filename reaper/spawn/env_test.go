package spawn

import (
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/reaper-init/reaper/signals"
)

// TestTrampolineRoundTrip: what reaper asks of the trampoline is what the
// trampoline reads, a path with colons included; a value made for another
// parent is refused.
func TestTrampolineRoundTrip(t *testing.T) {
	want := trampoline{pidVars: []string{"LISTEN_PID", "WATCHDOG_PID"},
		ignore: []syscall.Signal{syscall.SIGHUP, syscall.SIGINT}, mask: []syscall.Signal{syscall.SIGUSR1, signals.RTMax}}
	env := want.env(nil, os.Getppid(), "/opt/a:b/server")
	_, value, _ := strings.Cut(env[0], "=")
	got, path, ok := parseTrampoline(value)
	if !ok || path != "/opt/a:b/server" || !slices.Equal(got.pidVars, want.pidVars) ||
		!slices.Equal(got.ignore, want.ignore) || !slices.Equal(got.mask, want.mask) {
		t.Errorf("parsed %+v %q %v, want %+v", got, path, ok, want)
	}
	other := want.env(nil, os.Getppid()+1, "/bin/true")
	if _, value, _ := strings.Cut(other[0], "="); func() bool { _, _, ok := parseTrampoline(value); return ok }() {
		t.Error("a value made for another parent was taken")
	}
	if (trampoline{mask: []syscall.Signal{syscall.SIGINT}}).needed() {
		t.Error("a mask alone needs no trampoline")
	}
}

// TestMaskRoundTrips: every signal of a mask, up to SIGRTMAX (127 on
// mips), reaches the trampoline's.
func TestMaskRoundTrips(t *testing.T) {
	mask := []syscall.Signal{1, 31, 32, 33, 63, 64, signals.RTMax}
	want := signals.Members(signals.Sigset(mask...))
	if !slices.Equal(want, slices.Compact(mask)) {
		t.Fatalf("Members(Sigset(%v)) = %v", mask, want)
	}
	env := trampoline{mask: want}.env(nil, os.Getppid(), "/bin/true")
	_, value, _ := strings.Cut(env[0], "=")
	if got, _, ok := parseTrampoline(value); !ok || !slices.Equal(got.mask, want) {
		t.Errorf("the trampoline read the mask %v, want %v", got.mask, want)
	}
}
