package cgroup

import (
	"slices"
	"strings"
	"testing"
)

func TestParseMount(t *testing.T) {
	data := []byte(`31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`)
	mp, root, err := ParseMount(data, "")
	if err != nil || mp != "/sys/fs/cgroup/unified" || root != "/" {
		t.Errorf("ParseMount = %q %q %v", mp, root, err)
	}
	mp, root, err = ParseMount([]byte("50 1 0:40 /sub /mnt/cg\\040x rw shared:1 - cgroup2 none rw\n"), "")
	if err != nil || mp != "/mnt/cg x" || root != "/sub" {
		t.Errorf("optional fields and escapes: %q %q %v", mp, root, err)
	}
	if _, _, err := ParseMount([]byte("garbage\n1 2 3\n"), ""); err == nil {
		t.Error("no cgroup2 mount, no error")
	}
	if mp, _, err := ParseMount(data, "pids"); err != nil || mp != "/sys/fs/cgroup/pids" {
		t.Errorf("v1 pids hierarchy: %q %v", mp, err)
	}
	if _, _, err := ParseMount(data, "memory"); err == nil {
		t.Error("no memory hierarchy, no error")
	}
}

func TestParsePathV1(t *testing.T) {
	data := []byte("9:name=systemd:/\n8:pids:/ci/job\n4:cpu,cpuacct:/x\n0::/\n")
	if p, err := ParsePath(data, "pids"); err != nil || p != "/ci/job" {
		t.Errorf("pids = %q, %v", p, err)
	}
	if p, err := ParsePath(data, "cpuacct"); err != nil || p != "/x" {
		t.Errorf("cpuacct = %q, %v", p, err)
	}
	if p, err := ParsePath(data, ""); err != nil || p != "/" {
		t.Errorf("v2 = %q, %v", p, err)
	}
}

func TestParsePathV2(t *testing.T) {
	if p, err := ParsePath([]byte("9:name=systemd:/\n0::/system.slice/x.service\n"), ""); err != nil || p != "/system.slice/x.service" {
		t.Errorf("ParsePath = %q, %v", p, err)
	}
	for _, bad := range []string{"", "1:pids:/\n", "0::relative\n"} {
		if p, err := ParsePath([]byte(bad), ""); err == nil {
			t.Errorf("ParsePath(%q) = %q, want an error", bad, p)
		}
	}
}

func TestGroupInsideANamespacedMount(t *testing.T) {
	f := Files{
		Mountinfo: []byte("50 1 0:40 /sub /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"),
		Own:       []byte("0::/sub/unit.service\n"),
	}
	mp, dir, path, err := f.Group("")
	if err != nil || mp != "/sys/fs/cgroup" || dir != "/sys/fs/cgroup/unit.service" || path != "/sub/unit.service" {
		t.Errorf("Group = %q %q %q %v", mp, dir, path, err)
	}
	f.Own = []byte("0::/elsewhere\n")
	if _, _, _, err := f.Group(""); err == nil {
		t.Error("a group outside the mount gave no error")
	}
}

func TestParsePopulated(t *testing.T) {
	if full, err := ParsePopulated([]byte("populated 1\nfrozen 0\n")); err != nil || !full {
		t.Errorf("populated 1: %v %v", full, err)
	}
	if full, err := ParsePopulated([]byte("populated 0\n")); err != nil || full {
		t.Errorf("populated 0: %v %v", full, err)
	}
	if _, err := ParsePopulated([]byte("frozen 0\n")); err == nil {
		t.Error("no populated line, no error")
	}
}

func FuzzParsePath(f *testing.F) {
	f.Add([]byte("0::/system.slice/x.service\n"), "")
	f.Add([]byte("9:name=systemd:/\n0::/\n"), "")
	f.Add([]byte("0::relative"), "")
	f.Add([]byte("8:pids:/ci/job\n4:cpu,cpuacct:/x\n"), "pids")
	f.Add([]byte("8:pids\n::\n"), "pids")
	f.Fuzz(func(t *testing.T, data []byte, controller string) {
		path, err := ParsePath(data, controller)
		if err == nil && !strings.HasPrefix(path, "/") {
			t.Errorf("ParsePath(%q, %q) = %q, not absolute", data, controller, path)
		}
	})
}

func FuzzParseMount(f *testing.F) {
	f.Add([]byte("41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"), "")
	f.Add([]byte("50 1 0:40 /sub /mnt/cg\\040x rw shared:1 - cgroup2 none rw\n"), "")
	f.Add([]byte("1 2 3 4 5 - cgroup2\n"), "")
	f.Add([]byte("\\\\\\ - cgroup2"), "")
	f.Add([]byte("39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n"), "pids")
	f.Add([]byte("1 2 3 4 5 - cgroup x\n"), "pids")
	f.Fuzz(func(t *testing.T, data []byte, controller string) {
		ParseMount(data, controller)
	})
}

// TestParseProcs: a 0 (a process of a PID namespace the reader cannot see)
// or a bad line is skipped, and the rest of the list kept.
func TestParseProcs(t *testing.T) {
	got := ParseProcs([]byte("12\n0\n34\nx\n-5\n56\n"))
	if !slices.Equal(got, []int{12, 34, 56}) {
		t.Errorf("ParseProcs = %v, want [12 34 56]", got)
	}
}
