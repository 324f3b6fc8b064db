package reaper

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// InstanceVar is the variable reaper exports to COMMAND: the instance name
// given with --instance, or a value unique to the run. Every process of the
// run inherits it, so that a later run can recognise the leftovers of an
// earlier one, even after reaper itself was SIGKILLed.
const InstanceVar = "REAPER_INSTANCE"

// validInstance is what an instance name may hold: it names a cgroup and a
// lock file.
var validInstance = regexp.MustCompile(`^[A-Za-z0-9_.@-]{1,64}$`)

// CheckInstance validates an instance name.
func CheckInstance(name string) error {
	if !validInstance.MatchString(name) || name == "." || name == ".." {
		return fmt.Errorf("instance name %q: use 1 to 64 letters, digits and . _ @ -", name)
	}
	return nil
}

// uniqueInstance returns an instance value for a run without --instance:
// reaper's pid and the time, unique on the host.
func uniqueInstance() string {
	return "run-" + strconv.Itoa(os.Getpid()) + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
}

// instanceLock is held by the live reaper of a named instance for its whole
// life: a file locked with flock(2), which the kernel releases when its
// holder dies, however it dies. The file holds the holder's pid.
type instanceLock struct {
	path string
	fd   int
}

// lockDirs are where instance locks live, first usable wins.
func lockDirs() []string {
	var dirs []string
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" && os.Geteuid() != 0 {
		dirs = append(dirs, filepath.Join(d, "reaper"))
	}
	return append(dirs, "/run/reaper", filepath.Join(os.TempDir(), "reaper-"+strconv.Itoa(os.Geteuid())))
}

// errInstanceRunning says a live reaper holds the instance.
type errInstanceRunning struct {
	name string
	pid  int
}

func (e *errInstanceRunning) Error() string {
	return fmt.Sprintf("instance %s is running as pid %d (use --replace to take over)", e.name, e.pid)
}

// lockInstance takes the lock of instance name, or returns an
// *errInstanceRunning naming the holder.
func lockInstance(name string) (*instanceLock, error) {
	var last error
	for _, dir := range lockDirs() {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			last = err
			continue
		}
		path := filepath.Join(dir, name+".lock")
		fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o600)
		if err != nil {
			last = err
			continue
		}
		if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
			pid := lockHolder(fd)
			unix.Close(fd)
			if errors.Is(err, unix.EWOULDBLOCK) {
				return nil, &errInstanceRunning{name: name, pid: pid}
			}
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		unix.Ftruncate(fd, 0)
		unix.Pwrite(fd, []byte(strconv.Itoa(os.Getpid())+"\n"), 0)
		return &instanceLock{path: path, fd: fd}, nil
	}
	return nil, fmt.Errorf("no place for the instance lock: %w", last)
}

// lockHolder reads the pid a lock file holds. The holder writes it just
// after taking the lock: a reader may be early, and tries a few times.
func lockHolder(fd int) int {
	buf := make([]byte, 32)
	for try := 0; try < 50; try++ {
		n, _ := unix.Pread(fd, buf, 0)
		if pid, err := strconv.Atoi(strings.TrimSpace(string(buf[:n]))); err == nil && pid > 0 {
			return pid
		}
		time.Sleep(time.Millisecond)
	}
	return 0
}

// release drops the lock; the file stays for the next run.
func (l *instanceLock) release() {
	unix.Close(l.fd)
}

// replaceInstance stops the live reaper pid holding instance name and waits
// for it to go (SIGTERM; SIGKILL after wait), then takes the lock.
func replaceInstance(name string, pid int, wait time.Duration, log *logger) (*instanceLock, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err == nil {
		log.Warn("replacing the running instance", stringField("instance", name), intField("pid", pid))
		unix.PidfdSendSignal(fd, syscall.SIGTERM, nil, 0)
		if !pollExit([]int{fd}, time.Now().Add(wait)) {
			log.Warn("the running instance did not stop: killing it", intField("pid", pid))
			unix.PidfdSendSignal(fd, syscall.SIGKILL, nil, 0)
			pollExit([]int{fd}, time.Now().Add(killWait))
		}
		unix.Close(fd)
	}
	var lock *instanceLock
	for end := time.Now().Add(killWait); ; {
		if lock, err = lockInstance(name); err == nil || time.Now().After(end) {
			return lock, err
		}
		time.Sleep(10 * time.Millisecond) // the kernel drops the lock as the holder's files close
	}
}

// pollExit waits until every pidfd reports its process's exit, or until
// deadline; it reports whether all exited.
func pollExit(fds []int, deadline time.Time) bool {
	pending := append([]int(nil), fds...)
	for len(pending) > 0 {
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		pfds := make([]unix.PollFd, len(pending))
		for i, fd := range pending {
			pfds[i] = unix.PollFd{Fd: int32(fd), Events: unix.POLLIN}
		}
		if _, err := unix.Poll(pfds, int(left.Milliseconds())+1); err != nil && !errors.Is(err, unix.EINTR) {
			return false
		}
		pending = pending[:0]
		for _, p := range pfds {
			if p.Revents == 0 {
				pending = append(pending, int(p.Fd))
			}
		}
	}
	return true
}

// carriesMarker reports whether the environment of pid holds
// REAPER_INSTANCE=name. A process that replaced its environment (env -i,
// sudo) is not recognised: cgroup mode does not depend on it.
func carriesMarker(pid int, marker []byte) bool {
	var buf [4096]byte
	data, err := readProcFile(procRoot+"/"+strconv.Itoa(pid)+"/environ", buf[:])
	if err != nil {
		return false
	}
	for _, kv := range bytes.Split(data, []byte{0}) {
		if bytes.Equal(kv, marker) {
			return true
		}
	}
	return false
}

// leftover is a process of an earlier run of the instance.
type leftover struct {
	*handle
	cmdline string
}

// findLeftovers returns the processes outside reaper whose environment
// carries the instance's marker, with identity-checked handles.
func findLeftovers(name string, self int) []leftover {
	marker := []byte(InstanceVar + "=" + name)
	pids, err := listPIDs(procRoot)
	if err != nil {
		return nil
	}
	var found []leftover
	for _, pid := range pids {
		if pid == self || !carriesMarker(pid, marker) {
			continue
		}
		// pidfd first, marker again after: the pid may have been reused
		// by a process that is no leftover.
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			continue
		}
		h := &handle{fd: fd}
		if h.process, err = readProcess(pid); err != nil || h.State == 'Z' || !carriesMarker(pid, marker) || h.exited() {
			h.close()
			continue
		}
		found = append(found, leftover{handle: h, cmdline: commandLine(pid)})
	}
	return found
}
