package itest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/reaper-init/reaper/reaper/cgroup"
	"golang.org/x/sys/unix"
)

// Cgroup is a pair of groups made for one test run: a cgroup v2 group to
// count and kill its processes, and, where the pids controller lives in a v1
// hierarchy (as on this project's machines), a v1 group for pids.max.
type Cgroup struct {
	V2   string
	Pids string // "" when pids.max is set on the v2 group itself
}

var cgroupSeq atomic.Int64

// NewCgroup makes a cgroup bounded to pidsMax processes, or skips the test
// when cgroups cannot be made here.
func NewCgroup(t testing.TB, pidsMax int) *Cgroup {
	t.Helper()
	RequireRoot(t)
	v2root, pidsRoot := CgroupMounts()
	if v2root == "" {
		Skip(t, "no cgroup2 hierarchy mounted")
	}
	name := fmt.Sprintf("reaper-test-%d-%d", os.Getpid(), cgroupSeq.Add(1))
	cg := &Cgroup{V2: filepath.Join(v2root, ownCgroup("0::"), name)}
	if err := os.Mkdir(cg.V2, 0o755); err != nil {
		Skip(t, "cannot make a cgroup2 group: %v", err)
	}
	limit := []byte(strconv.Itoa(pidsMax))
	if err := os.WriteFile(cg.V2+"/pids.max", limit, 0); err != nil {
		if pidsRoot == "" {
			os.Remove(cg.V2)
			Skip(t, "no pids controller to bound fork-heavy tests")
		}
		cg.Pids = filepath.Join(pidsRoot, ownCgroup("pids"), name)
		if err := os.Mkdir(cg.Pids, 0o755); err != nil {
			os.Remove(cg.V2)
			Skip(t, "cannot make a pids cgroup: %v", err)
		}
		if err := os.WriteFile(cg.Pids+"/pids.max", limit, 0); err != nil {
			cg.Remove(t)
			t.Fatalf("pids.max: %v", err)
		}
	}
	return cg
}

// SharedCgroup makes a cgroup for several runs of one test, removed (with
// whatever is left in it) when the test ends.
func SharedCgroup(t *testing.T, pidsMax int) *Cgroup {
	t.Helper()
	cg := NewCgroup(t, pidsMax)
	t.Cleanup(func() { cg.Remove(t) })
	return cg
}

// dirs are the groups a process joins to be in this cgroup.
func (c *Cgroup) dirs() []string {
	if c.Pids == "" {
		return []string{c.V2}
	}
	return []string{c.V2, c.Pids}
}

// joinCgroup is a shell script that joins the groups named by $CG1 and
// $CG2 (see joinEnv), then execs its arguments: only what it runs is in
// the cgroup, not the test or the harness.
const joinCgroup = `echo $$ > "$CG1/cgroup.procs" && { [ -z "$CG2" ] || echo $$ > "$CG2/cgroup.procs"; } && exec "$@"`

// JoinArgv is argv run through joinCgroup (with joinEnv in its
// environment).
func JoinArgv(argv ...string) []string {
	return append([]string{"sh", "-c", joinCgroup, "sh"}, argv...)
}

// JoinEnv is the environment joinCgroup needs to join c.
func (c *Cgroup) JoinEnv() []string {
	return []string{"CG1=" + c.V2, "CG2=" + c.Pids}
}

// Kill SIGKILLs everything in the group, atomically.
func (c *Cgroup) Kill() {
	os.WriteFile(c.V2+"/cgroup.kill", []byte("1"), 0)
}

// Remove kills what is left, waits for the group to empty and removes it,
// child groups first.
func (c *Cgroup) Remove(t testing.TB) {
	c.Kill()
	if err := WaitEmpty(c.V2); err != nil {
		t.Errorf("cgroup %s: %v", c.V2, err)
	}
	if err := cgroup.RemoveTree(c.V2); err != nil {
		t.Errorf("remove cgroup: %v", err)
	}
	if c.Pids != "" {
		if err := os.Remove(c.Pids); err != nil {
			t.Errorf("remove pids cgroup: %v", err)
		}
	}
}

// WaitEmpty blocks until cgroup.events says "populated 0", woken by inotify.
func WaitEmpty(dir string) error {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if _, err := unix.InotifyAddWatch(fd, dir+"/cgroup.events", unix.IN_MODIFY); err != nil {
		return err
	}
	end := time.Now().Add(Deadline)
	buf := make([]byte, 4096)
	for {
		data, err := os.ReadFile(dir + "/cgroup.events")
		if err != nil {
			return err
		}
		if strings.Contains(string(data), "populated 0") {
			return nil
		}
		left := time.Until(end)
		if left <= 0 {
			return fmt.Errorf("still populated after %v", Deadline)
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if n, _ := unix.Poll(fds, int(left.Milliseconds())+1); n > 0 {
			unix.Read(fd, buf)
		}
	}
}

// RemoveCgroupTree removes a cgroup and every group below it, deepest first,
// trying again while processes still leave them.
func RemoveCgroupTree(t testing.TB, dir string) {
	if _, err := os.Stat(dir); err != nil {
		return
	}
	end := time.Now().Add(Deadline)
	for {
		err := cgroup.RemoveTree(dir)
		if err == nil {
			return
		}
		if time.Now().After(end) {
			t.Errorf("cannot remove cgroup %s: %v", dir, err)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// LeafDirs lists the cgroups of reaper's runs below the test's group.
func LeafDirs(cg *Cgroup) []string {
	dirs, _ := filepath.Glob(filepath.Join(cg.V2, "reaper-instance-*"))
	return dirs
}

// Hierarchy is one mounted cgroup hierarchy.
type Hierarchy struct {
	Mount   string
	V2      bool // cgroup2
	Pids    bool // the v1 pids controller
	Memory  bool // the v1 memory controller: never written to
	Systemd bool // the v1 name=systemd hierarchy
}

// CgroupHierarchies lists the mounted cgroup hierarchies, v1 and v2.
func CgroupHierarchies() []Hierarchy {
	data, _ := os.ReadFile("/proc/self/mountinfo")
	var hs []Hierarchy
	for _, line := range strings.Split(string(data), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		fields, tail := strings.Fields(pre), strings.Fields(post)
		if !ok || len(fields) < 5 || len(tail) < 3 || (tail[0] != "cgroup" && tail[0] != "cgroup2") {
			continue
		}
		v1, opts := tail[0] == "cgroup", ","+tail[2]+","
		hs = append(hs, Hierarchy{Mount: fields[4], V2: !v1,
			Pids:    v1 && strings.Contains(opts, ",pids,"),
			Memory:  v1 && strings.Contains(opts, ",memory,"),
			Systemd: v1 && strings.Contains(opts, ",name=systemd,")})
	}
	return hs
}

// CgroupMounts finds the cgroup2 mount and a v1 hierarchy holding the pids
// controller ("" for either that is missing).
func CgroupMounts() (v2, pids string) {
	for _, h := range CgroupHierarchies() {
		switch {
		case h.V2 && v2 == "":
			v2 = h.Mount
		case h.Pids:
			pids = h.Mount
		}
	}
	return v2, pids
}

// ownCgroup returns this process's path in the hierarchy whose line in
// /proc/self/cgroup starts with prefix ("0::" for v2, or a controller).
func ownCgroup(prefix string) string {
	data, _ := os.ReadFile("/proc/self/cgroup")
	for _, line := range strings.Split(string(data), "\n") {
		id, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		if prefix == "0::" && id == "0" {
			return strings.TrimPrefix(rest, ":")
		}
		controllers, path, _ := strings.Cut(rest, ":")
		if strings.Contains(","+controllers+",", ","+prefix+",") {
			return path
		}
	}
	return "/"
}
