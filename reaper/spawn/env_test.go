package spawn

import (
	"math/big"
	"os"
	"runtime"
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

// TestMaskReachesTheKernel: the mask the trampoline sets blocks exactly
// its signals, as the kernel itself reports them (SigBlk in
// /proc/thread-self/status, one bit per signal up to SIGRTMAX): the words
// of signals.Sigset are as wide and in the order this architecture's
// kernel reads them (32-bit words on 386, arm and mips; 128 signals on
// mips). The arch tests run it on arm64 and mips64el kernels.
func TestMaskReachesTheKernel(t *testing.T) {
	mask := slices.Compact([]syscall.Signal{syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM, 31, 32, 33, 40, 63, 64, signals.RTMax})
	done := make(chan string)
	go func() {
		// The thread keeps the mask: it ends with this goroutine, locked.
		runtime.LockOSThread()
		setThreadMask(signals.Sigset(mask...))
		status, err := os.ReadFile("/proc/thread-self/status")
		if err != nil {
			done <- err.Error()
			return
		}
		for _, line := range strings.Split(string(status), "\n") {
			if hex, ok := strings.CutPrefix(line, "SigBlk:"); ok {
				done <- strings.TrimSpace(hex)
				return
			}
		}
		done <- "no SigBlk line"
	}()
	hex := <-done
	blocked, ok := new(big.Int).SetString(hex, 16)
	if !ok {
		t.Fatalf("SigBlk: %s", hex)
	}
	if bits := len(hex) * 4; bits != int(signals.RTMax)+int(signals.RTMax)%2 {
		t.Errorf("SigBlk has %d bits (%s), want one per signal up to SIGRTMAX %d", bits, hex, signals.RTMax)
	}
	var got []syscall.Signal
	for sig := syscall.Signal(1); sig <= signals.RTMax; sig++ {
		if blocked.Bit(int(sig-1)) == 1 {
			got = append(got, sig)
		}
	}
	if !slices.Equal(got, mask) {
		t.Errorf("the kernel blocks %v (SigBlk %s), want %v", got, hex, mask)
	}
}
