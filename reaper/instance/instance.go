// Package instance names reaper's runs: the marker every process of a run
// inherits, the lock a named instance holds for its whole life, and the
// sweep of what an earlier run of the instance left behind.
package instance

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/reaper-init/reaper/reaper/handle"
	"github.com/reaper-init/reaper/reaper/logs"
)

// Var is the variable reaper exports to COMMAND: the instance name given
// with --instance, or a value unique to the run. Every process of the run
// inherits it, so that a later run can recognise the leftovers of an
// earlier one, even after reaper itself was SIGKILLed.
const Var = "REAPER_INSTANCE"

// Check validates an instance name. It names a cgroup and a lock file: 1 to
// 64 ASCII letters, digits and . _ @ -, and not . or .. (a loop, not a
// regexp: package regexp would cost every start-up its compilation and the
// binary 100 KiB).
func Check(name string) error {
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

// Unique returns an instance value for a run without --instance: reaper's
// pid and the time, unique on the host.
func Unique() string {
	return "run-" + strconv.Itoa(os.Getpid()) + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
}

// Marker is the environment entry that marks an instance's processes.
func Marker(name string) []byte {
	return []byte(Var + "=" + name)
}

// LeafName is the name of an instance's cgroup: a name distinctive enough
// that a group of that name below reaper's own is taken for an earlier
// run's, and swept.
func LeafName(name string) string {
	return "reaper-instance-" + name
}

// Lock is held by the live reaper of a named instance for its whole life:
// a POSIX record lock (fcntl F_SETLK) on a file named after the instance,
// which the kernel releases when its holder dies, however it dies, and
// whose holder F_GETLK reports, as a pid of the asker's own PID namespace
// (0 when the holder is not visible from there).
type Lock struct {
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

// ErrRunning says a live reaper holds the instance; PID is 0 when it runs
// in a PID namespace this reaper cannot see into.
type ErrRunning struct {
	Name string
	PID  int
}

func (e *ErrRunning) Error() string {
	if e.PID == 0 {
		return fmt.Sprintf("instance %s is running in another PID namespace", e.Name)
	}
	return fmt.Sprintf("instance %s is running as pid %d (use --replace to take over)", e.Name, e.PID)
}

// Take takes the lock of instance name, or returns an *ErrRunning naming
// the holder. Root also looks at the locks of other users' runs of the
// same name: it could sweep their processes.
func Take(name string) (*Lock, error) {
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
			return nil, &ErrRunning{Name: name, PID: pid}
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if os.Geteuid() == 0 {
		others, _ := filepath.Glob(filepath.Join(os.TempDir(), "reaper-*", name+".lock"))
		for _, other := range others {
			if pid, held := heldAt(other); held {
				unix.Close(fd)
				return nil, &ErrRunning{Name: name, PID: pid}
			}
		}
	}
	return &Lock{path: path, fd: fd}, nil
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

// Release drops the lock; the file stays for the next run.
func (l *Lock) Release() error {
	return unix.Close(l.fd)
}

// Replace stops the live reaper holding instance name and waits for it to
// go (SIGTERM; SIGKILL after wait), then takes the lock. It gives up
// waiting when stop reports true. The pid to signal comes from the kernel,
// and is checked to hold the lock still after its pidfd is open, so that a
// pid reused meanwhile is not signalled.
func Replace(name string, pid int, wait, killWait time.Duration, log *logs.Logger, stop func() bool) (*Lock, error) {
	if pid == 0 {
		return nil, &ErrRunning{Name: name}
	}
	dir, err := lockDir()
	if err != nil {
		return nil, err
	}
	h, err := handle.Open(pid, func() error {
		if holder, held := heldAt(filepath.Join(dir, name+".lock")); !held || holder != pid {
			return handle.ErrGone
		}
		return nil
	})
	if err == nil {
		log.Warn("replacing the running instance", logs.String("instance", name), logs.Int("pid", pid))
		h.Signal(syscall.SIGTERM)
		if !handle.WaitAll([]*handle.Handle{h}, time.Now().Add(wait), stop) && !stop() {
			log.Warn("the running instance did not stop: killing it", logs.Int("pid", pid))
			h.Signal(syscall.SIGKILL)
			handle.WaitAll([]*handle.Handle{h}, time.Now().Add(killWait), nil)
		}
		h.Close()
	}
	return Take(name)
}
