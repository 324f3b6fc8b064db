package reaper

import (
	"bytes"
	"strings"
	"testing"
)

func TestParseStatOddCommandNames(t *testing.T) {
	rest := " S 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 12345 1000 10 0"
	for _, comm := range []string{"sleep", "a b", "x) S 9 9 9", "((", "new\nline", ")"} {
		data := []byte("77 (" + comm + ")" + rest)
		p, err := parseStat(data)
		if err != nil {
			t.Fatalf("parseStat(%q): %v", data, err)
		}
		if p.PID != 77 || p.Comm != comm || p.State != 'S' || p.PPID != 1 || p.PGID != 42 || p.Start != 12345 {
			t.Errorf("parseStat(%q) = %+v", data, p)
		}
	}
}

func TestParseStatRejectsGarbage(t *testing.T) {
	for _, s := range []string{"", "77", "77 (x", "(x) S 1 2 3", "x (y) S 1 2", "77 (x) SS 1 2 3 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 5",
		"77 (x) S a 2 3 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 5", "-3 (x) S 1 2 3 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 5"} {
		if p, err := parseStat([]byte(s)); err == nil {
			t.Errorf("parseStat(%q) = %+v, want an error", s, p)
		}
	}
}

func TestParseChildren(t *testing.T) {
	got, err := parseChildren([]byte("12 13 4000 \n"))
	if err != nil || len(got) != 3 || got[2] != 4000 {
		t.Errorf("parseChildren = %v, %v", got, err)
	}
	if got, err := parseChildren([]byte("")); err != nil || len(got) != 0 {
		t.Errorf("parseChildren(empty) = %v, %v", got, err)
	}
	if _, err := parseChildren([]byte("12 x")); err == nil {
		t.Error("parseChildren accepted a non-number")
	}
}

func TestStatusMask(t *testing.T) {
	status := []byte("Name:\tx\nSigBlk:\t0000000000010000\nSigIgn:\t0000000000000001\n")
	if m, ok := statusMask(status, "SigIgn:"); !ok || m != 1 {
		t.Errorf("SigIgn = %x, %v", m, ok)
	}
	if m, ok := statusMask(status, "SigBlk:"); !ok || m != 1<<16 {
		t.Errorf("SigBlk = %x, %v", m, ok)
	}
	if _, ok := statusMask(status, "SigCgt:"); ok {
		t.Error("found a mask that is not there")
	}
}

func TestConsoleLogLines(t *testing.T) {
	var buf bytes.Buffer
	log, err := newLogger(&buf, LogConsole, 2)
	if err != nil {
		t.Fatal(err)
	}
	log.Warn("killed", intField("pid", 42), stringField("command", "sleep 300"))
	log.Error("x: command not found")
	log.Debug("reaped", intField("pid", 7), stringField("status", "exit 0"))
	want := `reaper: warning: killed pid=42 command="sleep 300"
reaper: x: command not found
reaper: debug: reaped pid=7 status="exit 0"
`
	if buf.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", buf.String(), want)
	}
	buf.Reset()
	quiet, _ := newLogger(&buf, LogConsole, 0)
	quiet.Info("started")
	quiet.Debug("reaped")
	if buf.Len() != 0 {
		t.Errorf("verbosity 0 logged %q", buf.String())
	}
	buf.Reset()
	js, _ := newLogger(&buf, LogJSON, 1)
	js.Info("started", intField("pid", 3))
	if !strings.Contains(buf.String(), `"level":"info"`) || !strings.Contains(buf.String(), `"pid":3`) {
		t.Errorf("json line %q", buf.String())
	}
	if _, err := newLogger(&buf, "xml", 0); err == nil {
		t.Error("NewLogger accepted format xml")
	}
}

func TestParseCgroupMount(t *testing.T) {
	data := []byte(`31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`)
	mp, root, err := parseCgroupMount(data, "")
	if err != nil || mp != "/sys/fs/cgroup/unified" || root != "/" {
		t.Errorf("parseCgroupMount = %q %q %v", mp, root, err)
	}
	mp, root, err = parseCgroupMount([]byte("50 1 0:40 /sub /mnt/cg\\040x rw shared:1 - cgroup2 none rw\n"), "")
	if err != nil || mp != "/mnt/cg x" || root != "/sub" {
		t.Errorf("optional fields and escapes: %q %q %v", mp, root, err)
	}
	if _, _, err := parseCgroupMount([]byte("garbage\n1 2 3\n"), ""); err == nil {
		t.Error("no cgroup2 mount, no error")
	}
	if mp, _, err := parseCgroupMount(data, "pids"); err != nil || mp != "/sys/fs/cgroup/pids" {
		t.Errorf("v1 pids hierarchy: %q %v", mp, err)
	}
	if _, _, err := parseCgroupMount(data, "memory"); err == nil {
		t.Error("no memory hierarchy, no error")
	}
}

func TestParseCgroupPathV1(t *testing.T) {
	data := []byte("9:name=systemd:/\n8:pids:/ci/job\n4:cpu,cpuacct:/x\n0::/\n")
	if p, err := parseCgroupPath(data, "pids"); err != nil || p != "/ci/job" {
		t.Errorf("pids = %q, %v", p, err)
	}
	if p, err := parseCgroupPath(data, "cpuacct"); err != nil || p != "/x" {
		t.Errorf("cpuacct = %q, %v", p, err)
	}
	if p, err := parseCgroupPath(data, ""); err != nil || p != "/" {
		t.Errorf("v2 = %q, %v", p, err)
	}
}

func TestSparesFor(t *testing.T) {
	for room, want := range map[int]int{-3: 0, 0: 0, 5: 0, 6: 1, 12: 4, 20: 8, 1000: 8} {
		if got := sparesFor(room); got != want {
			t.Errorf("sparesFor(%d) = %d, want %d", room, got, want)
		}
	}
}

func TestParseCgroupPathV2(t *testing.T) {
	if p, err := parseCgroupPath([]byte("9:name=systemd:/\n0::/system.slice/x.service\n"), ""); err != nil || p != "/system.slice/x.service" {
		t.Errorf("parseCgroupPath = %q, %v", p, err)
	}
	for _, bad := range []string{"", "1:pids:/\n", "0::relative\n"} {
		if p, err := parseCgroupPath([]byte(bad), ""); err == nil {
			t.Errorf("parseCgroupPath(%q) = %q, want an error", bad, p)
		}
	}
}

func TestParseNetTCP(t *testing.T) {
	data := []byte(`  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 99999 1 0000000000000000 100 0 0 10 0
   2: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 222 1 0000000000000000 100 0 0 10 0
`)
	inodes, err := parseNetTCP(data, 8080)
	if err != nil || len(inodes) != 1 || inodes[0] != 12345 {
		t.Errorf("parseNetTCP(8080) = %v, %v; want the listening socket only", inodes, err)
	}
	if _, err := parseNetTCP([]byte("header\n 0: zz\n"), 80); err == nil {
		t.Error("a short line gave no error")
	}
}

func TestParsePopulated(t *testing.T) {
	if full, err := parsePopulated([]byte("populated 1\nfrozen 0\n")); err != nil || !full {
		t.Errorf("populated 1: %v %v", full, err)
	}
	if full, err := parsePopulated([]byte("populated 0\n")); err != nil || full {
		t.Errorf("populated 0: %v %v", full, err)
	}
	if _, err := parsePopulated([]byte("frozen 0\n")); err == nil {
		t.Error("no populated line, no error")
	}
}

func TestCheckInstance(t *testing.T) {
	for _, ok := range []string{"gateway", "a.b-c_d@1", strings.Repeat("x", 64)} {
		if err := CheckInstance(ok); err != nil {
			t.Errorf("CheckInstance(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", "a/b", "a b", strings.Repeat("x", 65), "x\n"} {
		if err := CheckInstance(bad); err == nil {
			t.Errorf("CheckInstance(%q) accepted it", bad)
		}
	}
}
