package reaper

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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

// CheckInstance validates an instance name. It names a cgroup and a lock
// file: 1 to 64 ASCII letters, digits and . _ @ -, and not . or .. (a loop,
// not a regexp: package regexp would cost every start-up its compilation and
// the binary 100 KiB).
func CheckInstance(name string) error {
	ok := len(name) >= 1 && len(name) <= 64 && name != "." && name != ".."
	for i := 0; ok && i < len(name); i++ {
		c := name[i]
		ok = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("._@-", c) >= 0
	}
	if !ok {
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
// life: a POSIX record lock (fcntl F_SETLK) on a file named after the
// instance, which the kernel releases when its holder dies, however it dies,
// and whose holder F_GETLK reports, as a pid of the asker's own PID
// namespace (0 when the holder is not visible from there).
type instanceLock struct {
	path string
	fd   int
}

// lockDir is where instance locks live: /run/reaper for root, otherwise
// /tmp/reaper-UID, which must be a directory of the user's own that nobody
// else may write (someone else's could name the holder to signal).
func lockDir() (string, error) {
	uid := os.Geteuid()
	dir := "/run/reaper"
	if uid != 0 {
		dir = filepath.Join(os.TempDir(), "reaper-"+strconv.Itoa(uid))
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return "", err
	}
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return "", err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR || int(st.Uid) != uid || st.Mode&0o022 != 0 {
		return "", fmt.Errorf("%s is not a directory of user %d that only it may write", dir, uid)
	}
	return dir, nil
}

// errInstanceRunning says a live reaper holds the instance; pid is 0 when
// it runs in a PID namespace this reaper cannot see into.
type errInstanceRunning struct {
	name string
	pid  int
}

func (e *errInstanceRunning) Error() string {
	if e.pid == 0 {
		return fmt.Sprintf("instance %s is running in another PID namespace", e.name)
	}
	return fmt.Sprintf("instance %s is running as pid %d (use --replace to take over)", e.name, e.pid)
}

// lockInstance takes the lock of instance name, or returns an
// *errInstanceRunning naming the holder. Root also looks at the locks of
// other users' runs of the same name: it could sweep their processes.
func lockInstance(name string) (*instanceLock, error) {
	dir, err := lockDir()
	if err != nil {
		return nil, fmt.Errorf("instance lock: %w", err)
	}
	path := filepath.Join(dir, name+".lock")
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("instance lock: %w", err)
	}
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0}
	if err := unix.FcntlFlock(uintptr(fd), unix.F_SETLK, &lk); err != nil {
		pid, _ := lockHolder(fd)
		unix.Close(fd)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
			return nil, &errInstanceRunning{name: name, pid: pid}
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if os.Geteuid() == 0 {
		others, _ := filepath.Glob(filepath.Join(os.TempDir(), "reaper-*", name+".lock"))
		for _, other := range others {
			if pid, held := heldAt(other); held {
				unix.Close(fd)
				return nil, &errInstanceRunning{name: name, pid: pid}
			}
		}
	}
	return &instanceLock{path: path, fd: fd}, nil
}

// lockHolder asks the kernel who holds the lock on fd.
func lockHolder(fd int) (pid int, held bool) {
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0}
	if err := unix.FcntlFlock(uintptr(fd), unix.F_GETLK, &lk); err != nil || lk.Type == unix.F_UNLCK {
		return 0, false
	}
	return int(lk.Pid), true
}

// heldAt reports who holds the lock file at path, if anyone.
func heldAt(path string) (int, bool) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return 0, false
	}
	defer unix.Close(fd)
	return lockHolder(fd)
}

// release drops the lock; the file stays for the next run.
func (l *instanceLock) release() {
	unix.Close(l.fd)
}

// replaceInstance stops the live reaper holding instance name and waits for
// it to go (SIGTERM; SIGKILL after wait), then takes the lock. It gives up
// waiting when stop reports true. The pid to
// signal comes from the kernel, and is checked to hold the lock still after
// its pidfd is open, so that a pid reused meanwhile is not signalled.
func replaceInstance(name string, pid int, wait time.Duration, log *logger, stop func() bool) (*instanceLock, error) {
	if pid == 0 {
		return nil, &errInstanceRunning{name: name}
	}
	dir, err := lockDir()
	if err != nil {
		return nil, err
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err == nil {
		if holder, held := heldAt(filepath.Join(dir, name+".lock")); held && holder == pid {
			log.Warn("replacing the running instance", stringField("instance", name), intField("pid", pid))
			unix.PidfdSendSignal(fd, syscall.SIGTERM, nil, 0)
			if !pollExit([]int{fd}, time.Now().Add(wait), stop) && !stop() {
				log.Warn("the running instance did not stop: killing it", intField("pid", pid))
				unix.PidfdSendSignal(fd, syscall.SIGKILL, nil, 0)
				pollExit([]int{fd}, time.Now().Add(killWait), nil)
			}
		}
		unix.Close(fd)
	}
	return lockInstance(name)
}

// pollExit waits until every pidfd reports its process's exit, until
// deadline, or until stop reports true (looked at every 100 ms); it
// reports whether all exited.
func pollExit(fds []int, deadline time.Time, stop func() bool) bool {
	pending := append([]int(nil), fds...)
	for len(pending) > 0 {
		left := time.Until(deadline)
		if left <= 0 || (stop != nil && stop()) {
			return false
		}
		if stop != nil {
			left = min(left, 100*time.Millisecond)
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

// namespaceOf returns the namespace link of process (a pid, or "self"),
// "" when it cannot be read.
func namespaceOf(process, kind string) string {
	link, _ := os.Readlink(procRoot + "/" + process + "/ns/" + kind)
	return link
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

// instanceMarker is the environment entry that marks an instance's
// processes.
func instanceMarker(name string) []byte {
	return []byte(InstanceVar + "=" + name)
}

// findMarked returns the processes outside reaper whose environment carries
// marker, with identity-checked handles. It looks in reaper's own PID and
// mount namespaces only: a container that happens to run an instance of the
// same name is not reaper's to sweep (its lock lives in its own /run).
func findMarked(marker []byte, self int) []leftover {
	pids, err := listPIDs(procRoot)
	if err != nil {
		return nil
	}
	pidNS, mntNS := namespaceOf("self", "pid"), namespaceOf("self", "mnt")
	var found []leftover
	for _, pid := range pids {
		if pid == self || !carriesMarker(pid, marker) {
			continue
		}
		if id := strconv.Itoa(pid); namespaceOf(id, "pid") != pidNS || namespaceOf(id, "mnt") != mntNS {
			continue
		}
		// pidfd first, marker again after: the pid may have been reused
		// by a process that is no leftover. Only a pidfd is safe here.
		h, err := openChecked(pid, func() bool { return carriesMarker(pid, marker) })
		if err != nil {
			continue
		}
		if h.fd < 0 {
			h.close()
			continue
		}
		found = append(found, leftover{handle: h, cmdline: commandLine(pid)})
	}
	return found
}
