// Package procfs reads what reaper needs from /proc: a process's stat line,
// its children, its command line and environment, and the numeric entries
// of a directory. The parsers take bytes and never panic on bad input.
package procfs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Root is where procfs is mounted.
const Root = "/proc"

// Process is one process as /proc/PID/stat describes it. The state letter
// says nothing about whether the process lives: it shows Z once the main
// thread has exited, while other threads may still run.
type Process struct {
	PID     int
	PPID    int
	PGID    int
	Session int
	State   byte   // R, S, D, T, Z, ...
	Comm    string // the command name, at most 15 bytes
	Threads int    // number of threads
	Start   uint64 // start time in clock ticks since boot: with PID, an identity
}

// ParseStat parses the contents of /proc/PID/stat. The command name sits
// between the first '(' and the last ')' and may itself hold spaces,
// parentheses and newlines.
func ParseStat(data []byte) (Process, error) {
	open := bytes.IndexByte(data, '(')
	closing := bytes.LastIndexByte(data, ')')
	if open < 1 || closing < open {
		return Process{}, errors.New("stat: no (comm) field")
	}
	var p Process
	var err error
	if p.PID, err = strconv.Atoi(string(bytes.TrimSpace(data[:open]))); err != nil || p.PID <= 0 {
		return Process{}, fmt.Errorf("stat: bad pid %q", data[:open])
	}
	p.Comm = string(data[open+1 : closing])
	// Fields after the command name, numbered from 3 (state) as in proc(5).
	rest := strings.Fields(string(data[closing+1:]))
	const stateField, ppidField, pgrpField, sessionField, threadsField, startField = 3, 4, 5, 6, 20, 22
	if len(rest) < startField-stateField+1 {
		return Process{}, fmt.Errorf("stat: %d fields after comm, want at least %d", len(rest), startField-stateField+1)
	}
	if len(rest[0]) != 1 || !isStateLetter(rest[0][0]) {
		return Process{}, fmt.Errorf("stat: bad state %q", rest[0])
	}
	p.State = rest[0][0]
	if p.PPID, err = strconv.Atoi(rest[ppidField-stateField]); err != nil {
		return Process{}, fmt.Errorf("stat: bad ppid: %w", err)
	}
	if p.PGID, err = strconv.Atoi(rest[pgrpField-stateField]); err != nil {
		return Process{}, fmt.Errorf("stat: bad pgrp: %w", err)
	}
	if p.Session, err = strconv.Atoi(rest[sessionField-stateField]); err != nil {
		return Process{}, fmt.Errorf("stat: bad session: %w", err)
	}
	if p.Threads, err = strconv.Atoi(rest[threadsField-stateField]); err != nil {
		return Process{}, fmt.Errorf("stat: bad num_threads: %w", err)
	}
	if p.Start, err = strconv.ParseUint(rest[startField-stateField], 10, 64); err != nil {
		return Process{}, fmt.Errorf("stat: bad starttime: %w", err)
	}
	return p, nil
}

// isStateLetter reports whether c can be a process state in /proc/PID/stat:
// the kernel writes one ASCII letter (R, S, D, Z, T, t, X, I, ...).
func isStateLetter(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z'
}

// ReadFile reads a whole /proc file with open, read and close, into buf
// when it is large enough. os.ReadFile would add an fstat, a read to see the
// end of the file and an attempt to register with the runtime's poller: with
// a thousand processes to walk, that counts.
func ReadFile(path string, buf []byte) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	n := 0
	for {
		if n == len(buf) {
			buf = append(buf, make([]byte, len(buf)+512)...)
		}
		m, err := unix.Read(fd, buf[n:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, &fs.PathError{Op: "read", Path: path, Err: err}
		}
		if m == 0 {
			return buf[:n], nil
		}
		n += m
	}
}

// Path returns /proc/PID/name.
func Path(pid int, name string) string {
	return Root + "/" + strconv.Itoa(pid) + "/" + name
}

// Stat reads /proc/PID/stat.
func Stat(pid int) (Process, error) {
	var buf [512]byte
	data, err := ReadFile(Path(pid, "stat"), buf[:])
	if err != nil {
		return Process{}, err
	}
	p, err := ParseStat(data)
	if err != nil {
		return Process{}, fmt.Errorf("pid %d: %w", pid, err)
	}
	if p.PID != pid {
		return Process{}, fmt.Errorf("pid %d: stat names pid %d", pid, p.PID)
	}
	return p, nil
}

// ParseChildren parses /proc/PID/task/TID/children: pids separated by
// spaces.
func ParseChildren(data []byte) ([]int, error) {
	fields := strings.Fields(string(data))
	pids := make([]int, 0, len(fields))
	for _, f := range fields {
		pid, err := strconv.Atoi(f)
		if err != nil || pid <= 0 {
			return nil, fmt.Errorf("children: bad pid %q", f)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

// ChildrenPath is /proc/PID/task/TID/children.
func ChildrenPath(pid, tid int) string {
	return Root + "/" + strconv.Itoa(pid) + "/task/" + strconv.Itoa(tid) + "/children"
}

// Children lists the children of the given threads of pid, or of all its
// threads when tids is nil; nil when pid is gone.
func Children(pid int, tids []int) []int {
	if tids == nil {
		var err error
		if tids, err = ListPIDs(Path(pid, "task")); err != nil {
			return nil
		}
	}
	var children []int
	var buf [512]byte
	for _, tid := range tids {
		data, err := ReadFile(ChildrenPath(pid, tid), buf[:])
		if err != nil {
			continue
		}
		pids, err := ParseChildren(data)
		if err != nil {
			continue
		}
		children = append(children, pids...)
	}
	return children
}

// WalkUp calls visit with the stat of pid, then of its parent, and so on up
// the chain of parents, until visit returns false or the chain ends (a
// parent 0: beyond the PID namespace's root); 4096 steps at most. It
// returns the error of a stat it could not read.
func WalkUp(pid int, visit func(Process) bool) error {
	for depth := 0; pid > 0 && depth < 4096; depth++ {
		p, err := Stat(pid)
		if err != nil {
			return err
		}
		if !visit(p) {
			return nil
		}
		pid = p.PPID
	}
	return nil
}

// Descends reports whether pid's chain of parents reaches ancestor.
func Descends(pid, ancestor int) bool {
	found := false
	WalkUp(pid, func(p Process) bool {
		found = p.PPID == ancestor
		return !found
	})
	return found
}

// CommandLine returns /proc/PID/cmdline with its NULs turned into spaces, or
// "" when it cannot be read (the process is gone, or is a zombie).
func CommandLine(pid int) string {
	var buf [256]byte
	data, err := ReadFile(Path(pid, "cmdline"), buf[:])
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(bytes.ReplaceAll(data, []byte{0}, []byte{' '})))
}

// HasEnvItem reports whether the environment of pid, as /proc/PID/environ
// shows it, holds one of the entries kvs ("NAME=value", value without a
// comma): exactly, or as an item of a list of values separated by commas
// (NAME=a,value,b holds NAME=value).
func HasEnvItem(pid int, kvs ...[]byte) bool {
	if len(kvs) == 0 {
		return false
	}
	var buf [4096]byte
	data, err := ReadFile(Path(pid, "environ"), buf[:])
	if err != nil {
		return false
	}
	for _, entry := range bytes.Split(data, []byte{0}) {
		for _, kv := range kvs {
			if len(kv) > 0 && holdsItem(entry, kv) {
				return true
			}
		}
	}
	return false
}

// holdsItem reports whether entry is kv ("NAME=value"), or NAME= with a
// list of values holding value.
func holdsItem(entry, kv []byte) bool {
	name, value, ok := bytes.Cut(kv, []byte("="))
	list, found := bytes.CutPrefix(entry, append(name[:len(name):len(name)], '='))
	if !ok || !found {
		return false
	}
	for item := range bytes.SplitSeq(list, []byte(",")) {
		if bytes.Equal(item, value) {
			return true
		}
	}
	return false
}

// ListPIDs returns the numeric entries of a /proc directory.
func ListPIDs(dir string) ([]int, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	pids := make([]int, 0, len(names))
	for _, name := range names {
		if pid, err := strconv.Atoi(name); err == nil && pid > 0 {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// UIDs returns the real, effective, saved and file-system user ids of pid,
// from /proc/PID/status.
func UIDs(pid int) ([4]int, error) {
	var buf [2048]byte
	data, err := ReadFile(Path(pid, "status"), buf[:])
	if err != nil {
		return [4]int{}, err
	}
	return ParseUIDs(data)
}

// ParseUIDs reads the Uid line of /proc/PID/status: "Uid:\t0\t0\t0\t0".
func ParseUIDs(status []byte) ([4]int, error) {
	var ids [4]int
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		rest, ok := bytes.CutPrefix(sc.Bytes(), []byte("Uid:"))
		if !ok {
			continue
		}
		f := strings.Fields(string(rest))
		if len(f) != 4 {
			return ids, fmt.Errorf("status: bad Uid line %q", sc.Bytes())
		}
		for i := range ids {
			n, err := strconv.Atoi(f[i])
			if err != nil || n < 0 {
				return ids, fmt.Errorf("status: bad uid %q", f[i])
			}
			ids[i] = n
		}
		return ids, nil
	}
	return ids, errors.New("status: no Uid line")
}

// StatusMask reads a hexadecimal signal mask line such as "SigIgn:
// 0000000000001000" from /proc/PID/status: signals 1 to 64 as bits 0 to
// 63. The kernel writes one bit per signal it has: 128 on mips, whose
// signals above 64 are left out.
func StatusMask(status []byte, key string) (uint64, bool) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.HasPrefix(line, []byte(key)) {
			continue
		}
		low, high := string(bytes.TrimSpace(line[len(key):])), "0"
		if len(low) > 16 {
			high, low = low[:len(low)-16], low[len(low)-16:]
		}
		v, err := strconv.ParseUint(low, 16, 64)
		_, highErr := strconv.ParseUint(high, 16, 64)
		return v, err == nil && highErr == nil
	}
	return 0, false
}

// clockTicks is USER_HZ, the unit of start times in /proc/PID/stat: 100 on
// every Linux architecture.
const clockTicks = 100

// BootTicks returns the time since boot in the unit of Process.Start.
func BootTicks() uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return uint64(ts.Nano()) / (uint64(time.Second) / clockTicks)
}

// ExeID is "DEV:INO" of the running executable (/proc/self/exe), which
// tells a process started from reaper's very file; "" when it cannot be
// told.
func ExeID() string {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/exe", &st); err != nil {
		return ""
	}
	return strconv.FormatUint(uint64(st.Dev), 10) + ":" + strconv.FormatUint(st.Ino, 10)
}

// NameThreads names every thread of this process name (/proc/PID/comm for
// each task: what ps, pgrep and top show).
func NameThreads(name string) {
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, task := range tasks {
		os.WriteFile("/proc/self/task/"+task.Name()+"/comm", []byte(name), 0)
	}
}
