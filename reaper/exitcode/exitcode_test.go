package exitcode

import (
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestEndings: exits and deaths as wait4 reports them, mips's death by
// signal 127 included: its status has the low bits of a stop.
func TestEndings(t *testing.T) {
	for _, tc := range []struct {
		ws   unix.WaitStatus
		code int
		sig  syscall.Signal
	}{
		{ws: 3 << 8, code: 3},
		{ws: 15, code: 143, sig: 15},
		{ws: 11 | 0x80, code: 139, sig: 11}, // core dumped
		{ws: 0x7f, code: 255, sig: 127},     // mips: killed by signal 127
		{ws: 0xff, code: 255, sig: 127},     // the same, core dumped
	} {
		if got := Of(tc.ws); got != tc.code {
			t.Errorf("Of(%#x) = %d, want %d", uint32(tc.ws), got, tc.code)
		}
		if got := Signal(tc.ws); got != tc.sig {
			t.Errorf("Signal(%#x) = %d, want %d", uint32(tc.ws), got, tc.sig)
		}
		if Stopped(tc.ws) {
			t.Errorf("Stopped(%#x): it ended", uint32(tc.ws))
		}
	}
	// Stops by SIGSTOP (19 on x86, 23 on mips), and a continue.
	for _, ws := range []unix.WaitStatus{19<<8 | 0x7f, 23<<8 | 0x7f, 0xffff} {
		if Signal(ws) != 0 || Stopped(ws) != ws.Stopped() {
			t.Errorf("%#x: Signal %d, Stopped %v; it did not end", uint32(ws), Signal(ws), Stopped(ws))
		}
	}
}
