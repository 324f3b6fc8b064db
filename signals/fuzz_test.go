package signals

import (
	"syscall"
	"testing"
)

func FuzzParse(f *testing.F) {
	for _, s := range []string{"TERM", "SIGTERM", "term", "15", "RTMIN+3", "SIGRTMAX-1", "rtmin", "0", "65", "-1", "RTMIN+", "+", "SIG", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sig, err := Parse(s)
		if err == nil && (sig < 1 || sig > RTMax) {
			t.Errorf("Parse(%q) = %d without an error", s, sig)
		}
		if err == nil {
			if back, err := Parse(Name(sig)); sig != 32 && sig != 33 && (err != nil || back != sig) {
				t.Errorf("Parse(Name(Parse(%q))) = %v, %v", s, back, err)
			}
		}
	})
}

func FuzzParseRewrite(f *testing.F) {
	for _, s := range []string{"TERM:QUIT", "HUP:0", "USR1:usr2", "KILL:TERM", ":", "TERM:", "a:b:c", "15:9"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRewrite(s)
		if err == nil && (!Catchable(r.From) || r.From == syscall.SIGCHLD) {
			t.Errorf("ParseRewrite(%q) = %v: FROM cannot be forwarded", s, r)
		}
	})
}

func FuzzParseTarget(f *testing.F) {
	f.Add("group")
	f.Add("child")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) { ParseTarget(s) })
}
