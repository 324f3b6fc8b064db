// Package cgroup finds reaper's own cgroup and manages the cgroup v2 leaf
// group COMMAND is born in. Every process COMMAND forks stays in the leaf
// (unless moved out by someone with the rights to do so), double-forked or
// not, so cgroup.procs lists the tree without a walk, cgroup.kill SIGKILLs
// all of it at once, forks racing the kill included, and "populated 0" in
// cgroup.events proves it empty.
package cgroup

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/reaper-init/reaper/reaper/handle"
	"github.com/reaper-init/reaper/reaper/poll"
	"github.com/reaper-init/reaper/reaper/procfs"
)

// ParseMount returns the mount point and root of the cgroup2 mount
// (controller "") or of the cgroup v1 hierarchy that has controller, in the
// text of /proc/self/mountinfo. Hybrid layouts mount cgroup2 beside the v1
// hierarchies, for example at /sys/fs/cgroup/unified.
func ParseMount(data []byte, controller string) (mountPoint, root string, err error) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 4096), 1<<20)
	for sc.Scan() {
		// 41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
		// 39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
		before, after, ok := strings.Cut(sc.Text(), " - ")
		fields, tail := strings.Fields(before), strings.Fields(after)
		if !ok || len(fields) < 5 || len(tail) < 1 {
			continue
		}
		v2 := controller == "" && tail[0] == "cgroup2"
		v1 := controller != "" && tail[0] == "cgroup" && len(tail) >= 3 && slices.Contains(strings.Split(tail[2], ","), controller)
		if v2 || v1 {
			return unescapeMount(fields[4]), unescapeMount(fields[3]), nil
		}
	}
	if controller != "" {
		return "", "", fmt.Errorf("no cgroup v1 hierarchy with %s is mounted", controller)
	}
	return "", "", errors.New("no cgroup2 file system is mounted")
}

// unescapeMount undoes the octal escapes (\040 for a space) of mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// ParsePath returns the path of the cgroup v2 group ("0::/path", controller
// "") or of the group in the v1 hierarchy that has controller
// ("4:pids:/path"), in the text of /proc/PID/cgroup.
func ParsePath(data []byte, controller string) (string, error) {
	for _, line := range strings.Split(string(data), "\n") {
		id, rest, ok := strings.Cut(line, ":")
		controllers, path, ok2 := strings.Cut(rest, ":")
		if !ok || !ok2 {
			continue
		}
		v2 := controller == "" && id == "0" && controllers == ""
		v1 := controller != "" && slices.Contains(strings.Split(controllers, ","), controller)
		if !v2 && !v1 {
			continue
		}
		if !strings.HasPrefix(path, "/") {
			return "", fmt.Errorf("cgroup path %q is not absolute", path)
		}
		return path, nil
	}
	if controller != "" {
		return "", fmt.Errorf("no cgroup v1 %s entry in /proc/self/cgroup", controller)
	}
	return "", errors.New("no cgroup v2 entry in /proc/self/cgroup")
}

// Files are the texts of /proc/self/mountinfo and /proc/self/cgroup, or the
// error that reading them gave. reaper reads them once, at start: nothing
// moves it to another cgroup while it runs.
type Files struct {
	Mountinfo, Own []byte
	Err            error
}

// ReadFiles reads /proc/self/mountinfo and /proc/self/cgroup.
func ReadFiles() Files {
	var f Files
	if f.Mountinfo, f.Err = procfs.ReadFile(procfs.Root+"/self/mountinfo", make([]byte, 8192)); f.Err != nil {
		return f
	}
	f.Own, f.Err = procfs.ReadFile(procfs.Root+"/self/cgroup", make([]byte, 1024))
	return f
}

// Group returns the mount point of the cgroup2 file system (controller "")
// or of the v1 hierarchy with controller, and reaper's group in it: its
// directory and its path as /proc/self/cgroup names it.
func (f Files) Group(controller string) (mountPoint, dir, path string, err error) {
	if f.Err != nil {
		return "", "", "", f.Err
	}
	mountPoint, root, err := ParseMount(f.Mountinfo, controller)
	if err != nil {
		return "", "", "", err
	}
	if path, err = ParsePath(f.Own, controller); err != nil {
		return "", "", "", err
	}
	// The path is relative to the cgroup namespace's root, which is the
	// mount's root unless the mount shows a subtree only.
	rel, err := filepath.Rel(root, path)
	if err != nil || strings.HasPrefix(rel, "..") {
		return "", "", "", fmt.Errorf("reaper's cgroup %s is outside the cgroup mount of %s", path, root)
	}
	return mountPoint, filepath.Join(mountPoint, rel), path, nil
}

// PidsRoom returns how many more tasks (processes and threads) the pids
// controller lets reaper's group and its ancestors hold, the least over
// them, in the cgroup2 tree and in a v1 pids hierarchy; ok is false when no
// limit applies or none can be read.
func (f Files) PidsRoom() (room int, ok bool) {
	for _, controller := range []string{"", "pids"} {
		mountPoint, dir, _, err := f.Group(controller)
		if err != nil {
			continue
		}
		for ; strings.HasPrefix(dir, mountPoint); dir = filepath.Dir(dir) {
			if r, limited := pidsRoomIn(dir); limited && (!ok || r < room) {
				room, ok = r, true
			}
			if dir == mountPoint {
				break
			}
		}
	}
	return room, ok
}

// pidsRoomIn returns pids.max minus pids.current of the group at dir, and
// false when it has no limit (or no pids controller).
func pidsRoomIn(dir string) (int, bool) {
	var buf [32]byte
	limit, err := procfs.ReadFile(filepath.Join(dir, "pids.max"), buf[:])
	if err != nil {
		return 0, false
	}
	most, err := strconv.Atoi(strings.TrimSpace(string(limit)))
	if err != nil {
		return 0, false // "max"
	}
	current, err := procfs.ReadFile(filepath.Join(dir, "pids.current"), buf[:])
	if err != nil {
		return 0, false
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(current)))
	if err != nil {
		return 0, false
	}
	return most - n, true
}

// Leaf is a cgroup v2 group below reaper's own.
type Leaf struct {
	Dir  string // the group's directory
	Path string // the group as /proc/PID/cgroup names it
	fd   int    // the group's directory, open for clone3's CLONE_INTO_CGROUP
}

// Open opens the existing group name below the group at parentDir
// (parentPath as /proc/PID/cgroup names it).
func Open(parentDir, parentPath, name string) (*Leaf, error) {
	dir := filepath.Join(parentDir, name)
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	return &Leaf{Dir: dir, Path: filepath.Join(parentPath, name), fd: fd}, nil
}

// Create makes the group name below the group at parentDir; it must not
// exist yet.
func Create(parentDir, parentPath, name string) (*Leaf, error) {
	dir := filepath.Join(parentDir, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, err
	}
	c, err := Open(parentDir, parentPath, name)
	if err != nil {
		os.Remove(dir)
		return nil, err
	}
	return c, nil
}

// FD is the group's directory, open, for clone3's CLONE_INTO_CGROUP; -1
// once the group is closed.
func (c *Leaf) FD() int { return c.fd }

// Procs lists the processes in the group and in any group below it.
func (c *Leaf) Procs() ([]int, error) { return TreeProcs(c.Dir) }

// TreeProcs lists the processes in the cgroup2 group dir and in any group
// below it; an error only when dir itself cannot be read.
func TreeProcs(dir string) ([]int, error) {
	var pids []int
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			if path == dir {
				return err
			}
			return nil // a sub-group removed meanwhile
		}
		if !d.IsDir() {
			return nil
		}
		var buf [4096]byte
		data, err := procfs.ReadFile(filepath.Join(path, "cgroup.procs"), buf[:])
		if err != nil {
			return nil
		}
		pids = append(pids, ParseProcs(data)...)
		return nil
	})
	return pids, err
}

// ParseProcs reads a cgroup.procs file: one pid a line. A process of a
// PID namespace the reader cannot see is listed as 0, and skipped.
func ParseProcs(data []byte) []int {
	var pids []int
	for _, f := range strings.Fields(string(data)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
			pids = append(pids, pid)
		}
	}
	return pids
}

// Contains reports whether pid is in the group or below it, per
// /proc/PID/cgroup.
func (c *Leaf) Contains(pid int) bool {
	var buf [512]byte
	data, err := procfs.ReadFile(procfs.Path(pid, "cgroup"), buf[:])
	if err != nil {
		return false
	}
	path, err := ParsePath(data, "")
	return err == nil && (path == c.Path || strings.HasPrefix(path, c.Path+"/"))
}

// Member opens a handle on pid, listed in the group's cgroup.procs: a
// pidfd, opened before the membership is read from /proc/PID/cgroup (a pid
// listed could have died and been reused by a process elsewhere
// meanwhile). It returns handle.ErrGone when the process is gone or in
// another group now.
func (c *Leaf) Member(pid int) (*handle.Handle, error) {
	return handle.Open(pid, func() error {
		if !c.Contains(pid) {
			return handle.ErrGone
		}
		return nil
	})
}

// Record attributes: where a group keeps the record of who made it (see
// SetRecord). Only a process with CAP_SYS_ADMIN may read or write a
// trusted.* attribute; a user.* attribute (Linux 5.7 and later on
// cgroup2) only one that may write the group's directory, and anyone who
// may read it can read it.
const (
	trustedRecord = "trusted.reaper.run"
	userRecord    = "user.reaper.run"
)

// SetRecord keeps data on the group, in an extended attribute that nobody
// but its writer (root: trusted.*), or the group's owner (user.*), can
// write: for root, one that nobody else can read either.
func (c *Leaf) SetRecord(data []byte) error {
	var err error = unix.EPERM
	if os.Geteuid() == 0 {
		err = unix.Fsetxattr(c.fd, trustedRecord, data, 0)
	}
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOTSUP) { // not root, or root of a user namespace
		err = unix.Fsetxattr(c.fd, userRecord, data, 0)
	}
	if err != nil {
		return fmt.Errorf("record on %s: %w", c.Dir, err)
	}
	return nil
}

// Record returns what SetRecord kept on the group, or nil.
func (c *Leaf) Record() []byte {
	buf := make([]byte, 1024)
	for _, attr := range []string{trustedRecord, userRecord} {
		if n, err := unix.Fgetxattr(c.fd, attr, buf); err == nil {
			return buf[:n]
		}
	}
	return nil
}

// Owner returns the uid that owns the group's directory.
func (c *Leaf) Owner() (int, error) {
	var st unix.Stat_t
	if err := unix.Fstat(c.fd, &st); err != nil {
		return -1, err
	}
	return int(st.Uid), nil
}

// Exists reports whether the group's directory is still the one open.
func (c *Leaf) Exists() bool {
	var open, now unix.Stat_t
	return unix.Fstat(c.fd, &open) == nil && unix.Stat(c.Dir, &now) == nil && open.Dev == now.Dev && open.Ino == now.Ino
}

// RemoveEmpty removes the group if no process lives in it, nor a group
// below it (the kernel refuses to remove it then: populated or not is
// decided by the removal itself), and reports whether it did. It never
// signals anything.
func (c *Leaf) RemoveEmpty() bool {
	c.Close()
	return unix.Rmdir(c.Dir) == nil
}

// Kill SIGKILLs every process in the group and below, at once (Linux 5.14
// and later; errors.Is(err, fs.ErrNotExist) before).
func (c *Leaf) Kill() error {
	return os.WriteFile(filepath.Join(c.Dir, "cgroup.kill"), []byte("1"), 0)
}

// Populated reports whether any process lives in the group or below.
func (c *Leaf) Populated() (bool, error) {
	var buf [256]byte
	data, err := procfs.ReadFile(filepath.Join(c.Dir, "cgroup.events"), buf[:])
	if err != nil {
		return false, err
	}
	return ParsePopulated(data)
}

// ParsePopulated reads the populated line of cgroup.events.
func ParsePopulated(data []byte) (bool, error) {
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "populated "); ok {
			return strings.TrimSpace(v) == "1", nil
		}
	}
	return false, errors.New("cgroup.events has no populated line")
}

// Close closes the group's directory.
func (c *Leaf) Close() {
	if c.fd >= 0 {
		unix.Close(c.fd)
		c.fd = -1
	}
}

// Remove closes the group and removes it and the groups below it, deepest
// first. It fails while a process lives in any of them.
func (c *Leaf) Remove() error {
	c.Close()
	if err := unix.Rmdir(c.Dir); err == nil || errors.Is(err, unix.ENOENT) {
		return nil // no group below it: the usual case
	}
	return RemoveTree(c.Dir)
}

// RemoveTree removes the cgroup dir and every group below it, deepest first
// (a group's files go with its directory), and returns the last error other
// than a group already gone. It fails while a process lives in any of them.
func RemoveTree(dir string) error {
	var dirs []string
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, path)
		}
		return nil
	})
	var last error
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := os.Remove(dirs[i]); err != nil && !errors.Is(err, os.ErrNotExist) {
			last = err
		}
	}
	return last
}

// WatchEmpty returns a channel closed once the group holds no process.
// cgroup.events signals a change to whoever polls it (EPOLLPRI) until they
// read it again: it goes into an epoll set in the Go runtime's poller (no
// thread of its own), and populated is read again at each change. (Not
// inotify: closing an inotify instance waits for an SRCU grace period and a
// timer tick, 10 ms or more, added to every run.)
func (c *Leaf) WatchEmpty() (<-chan struct{}, error) {
	path := filepath.Join(c.Dir, "cgroup.events")
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	set, err := poll.New()
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	if err := set.Add(fd, unix.EPOLLPRI, int32(fd)); err != nil {
		set.Close()
		unix.Close(fd)
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	empty := make(chan struct{})
	go func() {
		defer close(empty)
		defer unix.Close(fd)
		defer set.Close()
		var buf [256]byte
		events := make([]unix.EpollEvent, 1)
		for {
			// Read populated first (the group may have emptied before the
			// watch was in place), and through fd: reading is what clears
			// its pending change.
			n, err := unix.Pread(fd, buf[:], 0)
			if err != nil {
				return
			}
			if full, err := ParsePopulated(buf[:n]); err != nil || !full {
				return
			}
			if _, err := set.Wait(events); err != nil {
				return
			}
		}
	}()
	return empty, nil
}
