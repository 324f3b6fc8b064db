package procfs

import (
	"os"
	"testing"
)

func TestParseStatOddCommandNames(t *testing.T) {
	rest := " S 1 42 40 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 12345 1000 10 0"
	for _, comm := range []string{"sleep", "a b", "x) S 9 9 9", "((", "new\nline", ")"} {
		data := []byte("77 (" + comm + ")" + rest)
		p, err := ParseStat(data)
		if err != nil {
			t.Fatalf("ParseStat(%q): %v", data, err)
		}
		if p.PID != 77 || p.Comm != comm || p.State != 'S' || p.PPID != 1 || p.PGID != 42 || p.Session != 40 || p.Start != 12345 {
			t.Errorf("ParseStat(%q) = %+v", data, p)
		}
	}
}

func TestParseStatRejectsGarbage(t *testing.T) {
	for _, s := range []string{"", "77", "77 (x", "(x) S 1 2 3", "x (y) S 1 2", "77 (x) SS 1 2 3 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 5",
		"77 (x) S a 2 3 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 5", "-3 (x) S 1 2 3 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 5"} {
		if p, err := ParseStat([]byte(s)); err == nil {
			t.Errorf("ParseStat(%q) = %+v, want an error", s, p)
		}
	}
}

func TestParseChildren(t *testing.T) {
	got, err := ParseChildren([]byte("12 13 4000 \n"))
	if err != nil || len(got) != 3 || got[2] != 4000 {
		t.Errorf("ParseChildren = %v, %v", got, err)
	}
	if got, err := ParseChildren([]byte("")); err != nil || len(got) != 0 {
		t.Errorf("ParseChildren(empty) = %v, %v", got, err)
	}
	if _, err := ParseChildren([]byte("12 x")); err == nil {
		t.Error("ParseChildren accepted a non-number")
	}
}

func TestStatusMask(t *testing.T) {
	status := []byte("Name:\tx\nSigBlk:\t0000000000010000\nSigIgn:\t0000000000000001\n")
	if m, ok := StatusMask(status, "SigIgn:"); !ok || m != 1 {
		t.Errorf("SigIgn = %x, %v", m, ok)
	}
	if m, ok := StatusMask(status, "SigBlk:"); !ok || m != 1<<16 {
		t.Errorf("SigBlk = %x, %v", m, ok)
	}
	if _, ok := StatusMask(status, "SigCgt:"); ok {
		t.Error("found a mask that is not there")
	}
	// mips has 128 signals: the kernel writes 32 digits.
	mips := []byte("SigIgn:\t0000000000000004000000000000a001\n")
	if m, ok := StatusMask(mips, "SigIgn:"); !ok || m != 0xa001 {
		t.Errorf("SigIgn of 128 signals = %x, %v; want a001 (signals 1 to 64)", m, ok)
	}
	if _, ok := StatusMask([]byte("SigIgn:\t000000000000000z000000000000a001\n"), "SigIgn:"); ok {
		t.Error("read a mask with a digit that is no hexadecimal digit")
	}
}

func TestOwnProcess(t *testing.T) {
	p, err := Stat(os.Getpid())
	if err != nil || p.PID != os.Getpid() || p.PPID != os.Getppid() || p.Threads < 1 || p.Start == 0 {
		t.Errorf("Stat(self) = %+v, %v", p, err)
	}
	if !HasEnvItem(os.Getpid(), []byte("PATH="+os.Getenv("PATH"))) || HasEnvItem(os.Getpid(), []byte("PATH=/nowhere/at/all")) {
		t.Error("HasEnvItem does not match this process's own PATH exactly")
	}
	for _, tc := range []struct {
		entry, kv string
		holds     bool
	}{
		{"M=a", "M=a", true},
		{"M=a,b,c", "M=b", true},
		{"M=a,b,c", "M=c", true},
		{"M=ab", "M=a", false},
		{"MM=a", "M=a", false},
		{"M=a", "MM=a", false},
		{"M=a,b", "M=a,b", false}, // an item holds no comma
		{"M=", "M=", true},
	} {
		if got := holdsItem([]byte(tc.entry), []byte(tc.kv)); got != tc.holds {
			t.Errorf("holdsItem(%q, %q) = %v", tc.entry, tc.kv, got)
		}
	}
}

func TestParseUIDs(t *testing.T) {
	ids, err := ParseUIDs([]byte("Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t5\t5\t5\t5\n"))
	if err != nil || ids != [4]int{1000, 0, 0, 0} {
		t.Errorf("ParseUIDs = %v, %v", ids, err)
	}
	for _, bad := range []string{"", "Uid:\t1\t2\n", "Uid:\ta\tb\tc\td\n", "Uid:\t-1\t0\t0\t0\n"} {
		if ids, err := ParseUIDs([]byte(bad)); err == nil {
			t.Errorf("ParseUIDs(%q) = %v, want an error", bad, ids)
		}
	}
	if ids, err := UIDs(os.Getpid()); err != nil || ids[0] != os.Getuid() || ids[1] != os.Geteuid() {
		t.Errorf("UIDs(self) = %v, %v", ids, err)
	}
}

func FuzzParseUIDs(f *testing.F) {
	f.Add([]byte("Uid:\t1000\t0\t0\t0\n"))
	f.Add([]byte("Uid: x"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if ids, err := ParseUIDs(data); err == nil {
			for _, id := range ids {
				if id < 0 {
					t.Errorf("ParseUIDs(%q) = %v", data, ids)
				}
			}
		}
	})
}

// Fuzz targets: bad input must give an error value, never a panic. The
// seeds run as ordinary tests; .ci/run also fuzzes each target.

func FuzzParseStat(f *testing.F) {
	f.Add([]byte("77 (sleep) S 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 12345 1000 10 0\n"))
	f.Add([]byte("9 (a (b) c) R 1 9 9 0 -1 0 0 0 0 0 0 0 0 0 20 0 3 0 5"))
	f.Add([]byte("5 (new\nline)) Z 1 5 5 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 18446744073709551615"))
	f.Add([]byte("1 () S"))
	f.Add([]byte(")("))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParseStat(data)
		if err == nil && (p.PID <= 0 || p.State == 0) {
			t.Errorf("ParseStat(%q) = %+v without an error", data, p)
		}
	})
}

func FuzzParseChildren(f *testing.F) {
	f.Add([]byte("12 13 4000 "))
	f.Add([]byte(""))
	f.Add([]byte("1\n2\t3"))
	f.Add([]byte("-1"))
	f.Fuzz(func(t *testing.T, data []byte) {
		pids, err := ParseChildren(data)
		for _, pid := range pids {
			if err == nil && pid <= 0 {
				t.Errorf("ParseChildren(%q) gave pid %d", data, pid)
			}
		}
	})
}

func FuzzStatusMask(f *testing.F) {
	f.Add([]byte("SigIgn:\t0000000000000001\n"), "SigIgn:")
	f.Add([]byte("SigIgn:\tzz\n"), "SigIgn:")
	f.Fuzz(func(t *testing.T, data []byte, key string) {
		StatusMask(data, key)
	})
}
