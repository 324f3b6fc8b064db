package reaper

import (
	"strings"
	"testing"
)

// Fuzz targets for every parser of what the kernel or the user hands
// reaper. The seeds run as ordinary tests; .ci/run also fuzzes each target
// for a few seconds. Bad input must give an error value, never a panic.

func FuzzParseStat(f *testing.F) {
	f.Add([]byte("77 (sleep) S 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 12345 1000 10 0\n"))
	f.Add([]byte("9 (a (b) c) R 1 9 9 0 -1 0 0 0 0 0 0 0 0 0 20 0 3 0 5"))
	f.Add([]byte("5 (new\nline)) Z 1 5 5 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 18446744073709551615"))
	f.Add([]byte("1 () S"))
	f.Add([]byte(")("))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := parseStat(data)
		if err == nil && (p.PID <= 0 || p.State == 0) {
			t.Errorf("parseStat(%q) = %+v without an error", data, p)
		}
	})
}

func FuzzParseChildren(f *testing.F) {
	f.Add([]byte("12 13 4000 "))
	f.Add([]byte(""))
	f.Add([]byte("1\n2\t3"))
	f.Add([]byte("-1"))
	f.Fuzz(func(t *testing.T, data []byte) {
		pids, err := parseChildren(data)
		for _, pid := range pids {
			if err == nil && pid <= 0 {
				t.Errorf("parseChildren(%q) gave pid %d", data, pid)
			}
		}
	})
}

func FuzzParseNetTCP(f *testing.F) {
	header := "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
	f.Add([]byte(header+"   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0 100 0 0 10 0\n"), 8080)
	f.Add([]byte(header+"   0: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 77 1\n"), 80)
	f.Add([]byte(header+" x"), 1)
	f.Fuzz(func(t *testing.T, data []byte, port int) {
		parseNetTCP(data, port)
	})
}

func FuzzParseProcCgroup(f *testing.F) {
	f.Add([]byte("0::/system.slice/x.service\n"), "")
	f.Add([]byte("9:name=systemd:/\n0::/\n"), "")
	f.Add([]byte("0::relative"), "")
	f.Add([]byte("8:pids:/ci/job\n4:cpu,cpuacct:/x\n"), "pids")
	f.Add([]byte("8:pids\n::\n"), "pids")
	f.Fuzz(func(t *testing.T, data []byte, controller string) {
		path, err := parseCgroupPath(data, controller)
		if err == nil && !strings.HasPrefix(path, "/") {
			t.Errorf("parseCgroupPath(%q, %q) = %q, not absolute", data, controller, path)
		}
	})
}

func FuzzParseMountinfo(f *testing.F) {
	f.Add([]byte("41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"), "")
	f.Add([]byte("50 1 0:40 /sub /mnt/cg\\040x rw shared:1 - cgroup2 none rw\n"), "")
	f.Add([]byte("1 2 3 4 5 - cgroup2\n"), "")
	f.Add([]byte("\\\\\\ - cgroup2"), "")
	f.Add([]byte("39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n"), "pids")
	f.Add([]byte("1 2 3 4 5 - cgroup x\n"), "pids")
	f.Fuzz(func(t *testing.T, data []byte, controller string) {
		parseCgroupMount(data, controller)
	})
}

func FuzzStatusMask(f *testing.F) {
	f.Add([]byte("SigIgn:\t0000000000000001\n"), "SigIgn:")
	f.Add([]byte("SigIgn:\tzz\n"), "SigIgn:")
	f.Fuzz(func(t *testing.T, data []byte, key string) {
		statusMask(data, key)
	})
}

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
