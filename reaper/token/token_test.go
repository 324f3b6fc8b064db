package token

import "testing"

func TestNew(t *testing.T) {
	a, b := New(16), New(16)
	if len(a) != 32 || a == b {
		t.Errorf("New(16) = %q then %q: want 32 hex digits, different each time", a, b)
	}
}
