package reaper

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// procRoot is where procfs is mounted.
const procRoot = "/proc"

// process is one process as /proc/PID/stat describes it.
type process struct {
	PID     int
	PPID    int
	PGID    int
	State   byte   // R, S, D, T, Z, ...
	Comm    string // the command name, at most 15 bytes
	Threads int    // number of threads
	Start   uint64 // start time in clock ticks since boot: with PID, an identity
}

// parseStat parses the contents of /proc/PID/stat. The command name sits
// between the first '(' and the last ')' and may itself hold spaces,
// parentheses and newlines.
func parseStat(data []byte) (process, error) {
	open := bytes.IndexByte(data, '(')
	closing := bytes.LastIndexByte(data, ')')
	if open < 1 || closing < open {
		return process{}, errors.New("stat: no (comm) field")
	}
	var p process
	var err error
	if p.PID, err = strconv.Atoi(string(bytes.TrimSpace(data[:open]))); err != nil || p.PID <= 0 {
		return process{}, fmt.Errorf("stat: bad pid %q", data[:open])
	}
	p.Comm = string(data[open+1 : closing])
	// Fields after the command name, numbered from 3 (state) as in proc(5).
	rest := strings.Fields(string(data[closing+1:]))
	const stateField, ppidField, pgrpField, threadsField, startField = 3, 4, 5, 20, 22
	if len(rest) < startField-stateField+1 {
		return process{}, fmt.Errorf("stat: %d fields after comm, want at least %d", len(rest), startField-stateField+1)
	}
	if len(rest[0]) != 1 || !isStateLetter(rest[0][0]) {
		return process{}, fmt.Errorf("stat: bad state %q", rest[0])
	}
	p.State = rest[0][0]
	if p.PPID, err = strconv.Atoi(rest[ppidField-stateField]); err != nil {
		return process{}, fmt.Errorf("stat: bad ppid: %w", err)
	}
	if p.PGID, err = strconv.Atoi(rest[pgrpField-stateField]); err != nil {
		return process{}, fmt.Errorf("stat: bad pgrp: %w", err)
	}
	if p.Threads, err = strconv.Atoi(rest[threadsField-stateField]); err != nil {
		return process{}, fmt.Errorf("stat: bad num_threads: %w", err)
	}
	if p.Start, err = strconv.ParseUint(rest[startField-stateField], 10, 64); err != nil {
		return process{}, fmt.Errorf("stat: bad starttime: %w", err)
	}
	return p, nil
}

// isStateLetter reports whether c can be a process state in /proc/PID/stat:
// the kernel writes one ASCII letter (R, S, D, Z, T, t, X, I, ...).
func isStateLetter(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z'
}

// readProcFile reads a whole /proc file with open, read and close, into buf
// when it is large enough. os.ReadFile would add an fstat, a read to see the
// end of the file and an attempt to register with the runtime's poller: with
// a thousand processes to walk, that counts.
func readProcFile(path string, buf []byte) ([]byte, error) {
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

// readProcess reads /proc/PID/stat.
func readProcess(pid int) (process, error) {
	var buf [512]byte
	data, err := readProcFile(procRoot+"/"+strconv.Itoa(pid)+"/stat", buf[:])
	if err != nil {
		return process{}, err
	}
	p, err := parseStat(data)
	if err != nil {
		return process{}, fmt.Errorf("pid %d: %w", pid, err)
	}
	if p.PID != pid {
		return process{}, fmt.Errorf("pid %d: stat names pid %d", pid, p.PID)
	}
	return p, nil
}

// parseChildren parses /proc/PID/task/TID/children: pids separated by
// spaces.
func parseChildren(data []byte) ([]int, error) {
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

// commandLine returns /proc/PID/cmdline with its NULs turned into spaces, or
// "" when it cannot be read (the process is gone, or is a zombie).
func commandLine(pid int) string {
	var buf [256]byte
	data, err := readProcFile(procRoot+"/"+strconv.Itoa(pid)+"/cmdline", buf[:])
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(bytes.ReplaceAll(data, []byte{0}, []byte{' '})))
}
