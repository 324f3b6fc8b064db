package systemd

import (
	"strings"
	"testing"
)

// Fuzz targets for every parser of what the kernel or the user hands
// reaper. The seeds run as ordinary tests; .ci/run also fuzzes each target
// for a few seconds. Bad input must give an error value, never a panic.

// FuzzParseTimespan feeds what `systemctl show -p TimeoutStopUSec` may
// print: a unit's stop timeout must parse or give an error, never a
// negative duration.
func FuzzParseTimespan(f *testing.F) {
	for _, s := range []string{"1min 30s", "90s", "infinity", "2.500s", "1h 2min 3s 4ms 5us", "", "5 s", "-1s", "99999999999h"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if d, err := parseTimespan(s); err == nil && d < 0 {
			t.Errorf("parseTimespan(%q) = %v", s, d)
		}
	})
}

// FuzzUnitFromCgroup feeds /proc/self/cgroup texts to the search for the
// systemd unit reaper runs in.
func FuzzUnitFromCgroup(f *testing.F) {
	f.Add("0::/system.slice/web.service\n")
	f.Add("12:pids:/\n1:name=systemd:/user.slice/user-1000.slice/user@1000.service/app.slice/x.service\n0::/\n")
	f.Add("0::/system.slice/web.service/reaper-instance-x\n")
	f.Add("::\n0:")
	f.Fuzz(func(t *testing.T, data string) {
		if unit, _ := unitFromCgroup(data); strings.Contains(unit, "/") {
			t.Errorf("unitFromCgroup(%q) = %q, not a unit name", data, unit)
		}
	})
}
