package stop

import (
	"testing"
	"time"
)

// TestForUnit: a unit's stop timeout less reaper's margin (a tenth, within
// 0.5 s to 5 s, at most half), infinity as no deadline.
func TestForUnit(t *testing.T) {
	for timeout, want := range map[time.Duration]time.Duration{
		90 * time.Second:        85 * time.Second,
		30 * time.Second:        27 * time.Second,
		10 * time.Second:        9 * time.Second,
		2 * time.Second:         1500 * time.Millisecond,
		600 * time.Millisecond:  300 * time.Millisecond,
		10 * time.Minute:        595 * time.Second,
		time.Microsecond:        time.Microsecond - time.Microsecond/2,
		5500 * time.Millisecond: 4950 * time.Millisecond,
	} {
		b := ForUnit(timeout)
		if b.NoDeadline || b.Deadline != want || b.Grace != min(DefaultGrace, want) {
			t.Errorf("ForUnit(%v) = %+v, want deadline %v", timeout, b, want)
		}
	}
	if b := ForUnit(0); !b.NoDeadline || b.Grace != DefaultGrace {
		t.Errorf("ForUnit(infinity) = %+v, want no deadline", b)
	}
	if b := ForPID1(); !b.NoDeadline || b.Grace != DefaultGrace {
		t.Errorf("ForPID1() = %+v", b)
	}
	if b := Fixed(3 * time.Second); b.NoDeadline || b.Deadline != 3*time.Second || b.Grace != 3*time.Second || b.OthersAfter() != 2250*time.Millisecond {
		t.Errorf("Fixed(3s) = %+v, others after %v", b, b.OthersAfter())
	}
}
