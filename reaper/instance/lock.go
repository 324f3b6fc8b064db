package instance

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/reaper-init/reaper/reaper/handle"
	"github.com/reaper-init/reaper/reaper/logs"
	"github.com/reaper-init/reaper/reaper/procfs"
	"github.com/reaper-init/reaper/reaper/token"
	"github.com/reaper-init/reaper/signals"
)

// Lock is held by the live reaper of a named instance for its whole life:
// a flock on a file named after the instance, which the kernel releases
// when its holder dies, however it dies, and which no other descriptor's
// close can release (a POSIX record lock would be, by any close of any
// descriptor of the file in the holding process). The file records the
// run: its pid, its token, and the tokens of earlier runs whose sweep has
// not ended yet, which the next run reads to sweep.
type Lock struct {
	Dir  string // where the lock file is
	Name string // the instance
	// Token is this run's, fresh.
	Token string
	// Previous holds the tokens whose leftovers are to be swept: the run
	// that held the lock before, and those whose sweep a stop or a crash
	// cut short (empty when no run left a record).
	Previous []string
	fd       int
}

// maxUnswept bounds the unswept tokens a run takes on, besides the token
// of the run before: runs that each died in their own sweep, again and
// again, are not remembered for ever.
const maxUnswept = 8

// Dir returns the directory where the locks of the user reaper runs as
// live, and makes it if need be: /run/reaper for root; for another user,
// reaper below the user's runtime directory (/run/user/UID, which systemd-
// logind makes, or else $XDG_RUNTIME_DIR), and else /tmp/reaper-UID. None
// moves with $TMPDIR. The directory, and the runtime directory holding it,
// must be the user's own that nobody else may write, reached without a
// symbolic link: anyone else's could name the process to signal.
func Dir() (string, error) {
	uid := os.Geteuid()
	if uid == 0 {
		return ensureDir("/run", "reaper", uid)
	}
	for _, runtime := range []string{"/run/user/" + strconv.Itoa(uid), os.Getenv("XDG_RUNTIME_DIR")} {
		if runtime != "" && ownDir(runtime, uid) {
			return ensureDir(runtime, "reaper", uid)
		}
	}
	return ensureDir("/tmp", "reaper-"+strconv.Itoa(uid), uid)
}

// ownDir reports whether path is a directory of uid's that no one else may
// write, reached without a symbolic link.
func ownDir(path string, uid int) bool {
	fd, err := openNoFollow(path)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	return checkOwn(fd, uid, unix.S_IFDIR) == nil
}

// ensureDir makes name in parent if it is missing and returns its path, once
// checked to be a directory of uid's that no one else may write.
func ensureDir(parent, name string, uid int) (string, error) {
	path := parent + "/" + name
	pfd, err := openNoFollow(parent)
	if err != nil {
		return "", err
	}
	defer unix.Close(pfd)
	if err := unix.Mkdirat(pfd, name, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
		return "", &os.PathError{Op: "mkdir", Path: path, Err: err}
	}
	fd, err := unix.Openat(pfd, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	if err := checkOwn(fd, uid, unix.S_IFDIR); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return path, nil
}

// openNoFollow opens path (absolute) with O_PATH, following no symbolic
// link at any of its components.
func openNoFollow(path string) (int, error) {
	fd, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	for _, part := range strings.Split(strings.Trim(path, "/"), "/") {
		if part == "" || part == "." {
			continue
		}
		if part == ".." {
			unix.Close(fd)
			return -1, &os.PathError{Op: "open", Path: path, Err: unix.EINVAL}
		}
		next, err := unix.Openat(fd, part, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		if err != nil {
			return -1, &os.PathError{Op: "open", Path: path, Err: err}
		}
		fd = next
	}
	return fd, nil
}

// errNotOwn is the error of a file that is not what a lock may trust.
var errNotOwn = errors.New("not the user's own, or writable by others")

// checkOwn checks that fd is a file of type kind (S_IFDIR, S_IFREG) owned
// by uid that no one else may write.
func checkOwn(fd, uid int, kind uint32) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != kind || int(st.Uid) != uid || st.Mode&0o022 != 0 {
		return fmt.Errorf("%w (owner %d, mode %o; want user %d, %s)", errNotOwn, st.Uid, st.Mode, uid, kindName(kind))
	}
	return nil
}

func kindName(kind uint32) string {
	if kind == unix.S_IFDIR {
		return "a directory"
	}
	return "a regular file"
}

// ErrRunning says a live reaper holds the instance; PID is 0 when the
// kernel cannot name it (it runs in a PID namespace this reaper cannot see
// into, or /proc/locks does not name its file). Reason, when set, says why
// --replace signalled nothing.
type ErrRunning struct {
	Name   string
	PID    int
	Reason string
}

func (e *ErrRunning) Error() string {
	switch {
	case e.Reason != "":
		return fmt.Sprintf("instance %s is locked, and --replace signalled nothing: %s", e.Name, e.Reason)
	case e.PID == 0:
		return fmt.Sprintf("instance %s is running, and its pid cannot be told from here (another PID namespace's, "+
			"or not named by /proc/locks): --replace cannot stop it", e.Name)
	}
	return fmt.Sprintf("instance %s is running as pid %d (use --replace to take over)", e.Name, e.PID)
}

// Take takes the lock of instance name, or returns an *ErrRunning naming
// the holder. It never blocks: the file is opened without following a
// link and non-blocking (a FIFO planted there would block an open), and
// must be a regular file of the user's own.
func Take(name string) (*Lock, error) {
	dir, err := Dir()
	if err != nil {
		return nil, fmt.Errorf("instance lock: %w", err)
	}
	fd, err := openLockFile(dir, name)
	if err != nil {
		return nil, err
	}
	if err := lockOrName(fd); err != nil {
		unix.Close(fd)
		var running *ErrRunning
		if errors.As(err, &running) {
			running.Name = name
			return nil, running
		}
		return nil, fmt.Errorf("instance lock %s: %w", lockPath(dir, name), err)
	}
	l := &Lock{Dir: dir, Name: name, fd: fd, Token: token.New(16)}
	l.Previous = l.readRecord()
	if err := l.writeRecord(l.Previous); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("instance lock %s: %w", lockPath(dir, name), err)
	}
	return l, nil
}

func lockPath(dir, name string) string { return dir + "/" + name + ".lock" }

// lockOrName takes the flock on fd, or returns an *ErrRunning naming its
// holder. A holder that let go between the two (a replaced instance
// exiting) is no holder: the lock is tried once more.
func lockOrName(fd int) error {
	for try := 0; ; try++ {
		err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return err
		}
		pid, held := holder(fd)
		if held || try > 0 {
			return &ErrRunning{PID: pid}
		}
	}
}

// openLockFile opens (or makes) the lock file of name in dir: without
// following a link, without blocking (a FIFO), without making a terminal
// planted there reaper's controlling terminal.
func openLockFile(dir, name string) (int, error) {
	dfd, err := openNoFollow(dir)
	if err != nil {
		return -1, fmt.Errorf("instance lock: %w", err)
	}
	defer unix.Close(dfd)
	fd, err := unix.Openat(dfd, name+".lock", unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return -1, fmt.Errorf("instance lock: %w", &os.PathError{Op: "open", Path: lockPath(dir, name), Err: err})
	}
	if err := checkOwn(fd, os.Geteuid(), unix.S_IFREG); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("instance lock %s: %w", lockPath(dir, name), err)
	}
	return fd, nil
}

// The record in a lock file:
//
//	pid N
//	token T
//	unswept U
//
// with one "unswept" line per token whose leftovers this run has yet to
// sweep, until its sweep ends (Swept).

// readRecord returns the tokens of the run that wrote the file last, its
// own first and then those it had not swept, at most maxUnswept+1.
func (l *Lock) readRecord() []string {
	var buf [4096]byte
	n, err := unix.Pread(l.fd, buf[:], 0)
	if err != nil {
		return nil
	}
	var tokens []string
	for _, line := range strings.Split(string(buf[:n]), "\n") {
		key, v, _ := strings.Cut(line, " ")
		if (key == "token" || key == "unswept") && isHex(v) && !slices.Contains(tokens, v) && len(tokens) <= maxUnswept {
			tokens = append(tokens, v)
		}
	}
	return tokens
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if !('0' <= s[i] && s[i] <= '9' || 'a' <= s[i] && s[i] <= 'f') {
			return false
		}
	}
	return s != ""
}

// writeRecord writes this run's record, with the tokens in unswept.
func (l *Lock) writeRecord(unswept []string) error {
	record := fmt.Sprintf("pid %d\ntoken %s\n", os.Getpid(), l.Token)
	for _, t := range unswept {
		record += "unswept " + t + "\n"
	}
	// Written over the old one, then cut to its length: a reaper killed in
	// between leaves a record that still names every token to sweep.
	if _, err := unix.Pwrite(l.fd, []byte(record), 0); err != nil {
		return err
	}
	return unix.Ftruncate(l.fd, int64(len(record)))
}

// Swept records that the leftovers of Previous are gone: a later run need
// only sweep this run's.
func (l *Lock) Swept() error {
	if len(l.Previous) == 0 {
		return nil
	}
	return l.writeRecord(nil)
}

// Release drops the lock; the file stays, with this run's token for the
// next run.
func (l *Lock) Release() error {
	return unix.Close(l.fd)
}

// holder returns the pid of the process that holds the flock on the file
// fd is open on, as the kernel lists it in /proc/locks (in the asker's PID
// namespace: 0 when the holder is not visible from there). The pid is
// the one that took the lock: that process may have exited since, leaving
// the lock to a process that inherited its descriptor, and its pid may
// name another process by now (see holds).
func holder(fd int) (int, bool) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, false
	}
	var buf [4096]byte
	data, err := procfs.ReadFile(procfs.Root+"/locks", buf[:])
	if err != nil {
		return 0, false
	}
	pid, found, sameInode := parseLocks(data, unix.Major(uint64(st.Dev)), unix.Minor(uint64(st.Dev)), st.Ino)
	if found {
		return pid, true
	}
	// The kernel writes the device of the file's superblock, which a stat
	// may not show (btrfs subvolumes): a flock on the same inode number is
	// the file's when its holder holds it on the very file.
	for _, pid := range sameInode {
		if ok, _ := holds(pid, uint64(st.Dev), st.Ino); ok {
			return pid, true
		}
	}
	return 0, false
}

// holds reports whether process pid holds a flock on the file (dev, ino)
// now: one of its descriptors is open on the file, and its
// /proc/PID/fdinfo lists a flock through that descriptor (the kernel lists
// there the flocks of the open file description, which every process that
// inherited it shares; another descriptor of the same file, such as one
// whose flock is refused, lists none). It returns an error when pid's
// descriptors cannot be read: another user's process, or gone.
func holds(pid int, dev, ino uint64) (bool, error) {
	dir := procfs.Path(pid, "fd")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false, err
	}
	for _, e := range entries {
		var st unix.Stat_t
		if unix.Stat(dir+"/"+e.Name(), &st) != nil || uint64(st.Dev) != dev || st.Ino != ino {
			continue
		}
		var buf [1024]byte
		info, err := procfs.ReadFile(procfs.Path(pid, "fdinfo/"+e.Name()), buf[:])
		if err == nil && fdinfoFlock(info) {
			return true, nil
		}
	}
	return false, nil
}

// fdinfoFlock reports whether the text of a /proc/PID/fdinfo/FD file lists
// a flock held through that descriptor:
//
//	lock:	1: FLOCK  ADVISORY  WRITE 1234 00:2d:5678 0 EOF
func fdinfoFlock(data []byte) bool {
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == "lock:" && f[2] == "FLOCK" {
			return true
		}
	}
	return false
}

// parseLocks finds, in the text of /proc/locks, the flock on the file
// (major, minor, inode) and returns its holder's pid (0 when the kernel
// cannot name it here):
//
//	1: FLOCK  ADVISORY  WRITE 1234 00:2d:5678 0 EOF
//
// Failing an exact match, it returns the holders of flocks on the same
// inode number on other devices, for the caller to check (see holder): an
// inode number alone could be another file's.
func parseLocks(data []byte, major, minor uint32, ino uint64) (pid int, found bool, sameInode []int) {
	want := fmt.Sprintf("%02x:%02x:%d", major, minor, ino)
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 6 || f[1] != "FLOCK" {
			continue // a waiter ("2: -> FLOCK ...") or another kind of lock
		}
		pid, err := strconv.Atoi(f[4])
		if err != nil || pid < 0 {
			pid = 0
		}
		if sameDevIno(f[5], want) {
			return pid, true, nil
		}
		if parts := strings.Split(f[5], ":"); len(parts) == 3 && parts[2] == strconv.FormatUint(ino, 10) && pid > 0 {
			sameInode = append(sameInode, pid)
		}
	}
	return 0, false, sameInode
}

// sameDevIno compares "MAJ:MIN:INODE" fields whose hexadecimal device
// numbers may be written with more digits than two.
func sameDevIno(got, want string) bool {
	g, w := strings.Split(got, ":"), strings.Split(want, ":")
	if len(g) != 3 || len(w) != 3 {
		return false
	}
	for i := 0; i < 2; i++ {
		a, err1 := strconv.ParseUint(g[i], 16, 32)
		b, err2 := strconv.ParseUint(w[i], 16, 32)
		if err1 != nil || err2 != nil || a != b {
			return false
		}
	}
	return g[2] == w[2]
}

// Replace stops the live reaper holding instance name and waits for it to
// go (SIGTERM; SIGKILL after wait), then takes the lock. It gives up
// waiting when stop reports true. It signals only a process that provably
// holds the lock: pid, which the kernel names (/proc/locks), once a pidfd
// on it is open, must have a descriptor through which it holds the flock
// (see holds), and the pidfd must show it alive after that check. The pid
// the kernel names is the one that took the lock, which may have exited
// since and left it to a process it started, its pid now another
// process's: then, or when pid's descriptors cannot be read (another
// user's process), or a signal is refused, Replace gives up at once with
// an *ErrRunning whose Reason says so.
func Replace(name string, pid int, wait, killWait time.Duration, log *logs.Logger, stop func() bool) (*Lock, error) {
	for try := 0; ; try++ {
		if pid == 0 {
			return nil, &ErrRunning{Name: name}
		}
		h, err := openHolder(name, pid)
		if err != nil {
			return nil, err
		}
		if h != nil {
			err = stopHolder(name, h, wait, killWait, log, stop)
			h.Close()
			if err != nil {
				return nil, err
			}
		}
		l, err := Take(name)
		var running *ErrRunning
		switch {
		case h != nil || !errors.As(err, &running):
			return l, err
		case running.PID == pid:
			// The process the kernel names exited before its pidfd was
			// open, and the lock is still held: by a process that
			// inherited its descriptor, which the kernel does not name.
			running.Reason = fmt.Sprintf("the process the kernel names as the lock's holder, pid %d, is gone, "+
				"and no process can be shown to hold the lock", pid)
			return nil, running
		case try > 0:
			return nil, err
		}
		pid = running.PID // another reaper took the lock meanwhile
	}
}

// openHolder returns a handle on pid once it is shown to hold the lock of
// instance name (see Replace), nil when it has exited, or an
// *ErrRunning that says why it is not to be signalled.
func openHolder(name string, pid int) (*handle.Handle, error) {
	dir, err := Dir()
	if err != nil {
		return nil, err
	}
	fd, err := openLockFile(dir, name)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	err = unix.Fstat(fd, &st)
	unix.Close(fd)
	if err != nil {
		return nil, fmt.Errorf("instance lock %s: %w", lockPath(dir, name), err)
	}
	h, err := handle.Open(pid, func() error {
		ok, err := holds(pid, uint64(st.Dev), st.Ino)
		if err != nil || ok {
			return err
		}
		return errNotHolder
	})
	switch {
	case err == nil:
		return h, nil
	case errors.Is(err, handle.ErrGone):
		return nil, nil
	case errors.Is(err, errNotHolder):
		return nil, &ErrRunning{Name: name, PID: pid, Reason: fmt.Sprintf("pid %d, which the kernel names as the lock's holder, "+
			"does not hold it now (the process that took the lock left it to another one, which the kernel does not name, "+
			"and may have exited, its pid reused), and no process can be shown to hold the lock", pid)}
	case errors.Is(err, fs.ErrPermission):
		return nil, &ErrRunning{Name: name, PID: pid, Reason: fmt.Sprintf("pid %d, which the kernel names as the lock's holder, "+
			"cannot be shown to hold it: its open files cannot be read (another user's process)", pid)}
	}
	return nil, &ErrRunning{Name: name, PID: pid, Reason: fmt.Sprintf("pid %d cannot be shown to hold the lock: %v", pid, err)}
}

// errNotHolder says a process does not hold the lock.
var errNotHolder = errors.New("does not hold the lock")

// stopHolder stops the holder h of instance name: SIGTERM, then SIGKILL
// after wait. It logs each signal once delivered, and returns an
// *ErrRunning at once when one is refused.
func stopHolder(name string, h *handle.Handle, wait, killWait time.Duration, log *logs.Logger, stop func() bool) error {
	send := func(sig syscall.Signal) error {
		err := h.Signal(sig)
		if err == nil || errors.Is(err, handle.ErrGone) {
			return nil
		}
		return &ErrRunning{Name: name, PID: h.PID, Reason: fmt.Sprintf("%s to pid %d, the lock's holder, was refused: %v",
			signals.Name(sig), h.PID, err)}
	}
	if err := send(syscall.SIGTERM); err != nil {
		return err
	}
	log.Warn("replacing the running instance: sent SIGTERM", logs.String("instance", name), logs.Int("pid", h.PID))
	if handle.WaitAll([]*handle.Handle{h}, time.Now().Add(wait), stop) || stop() {
		return nil
	}
	if err := send(syscall.SIGKILL); err != nil {
		return err
	}
	log.Warn("the running instance did not stop: killed it (SIGKILL)", logs.String("instance", name), logs.Int("pid", h.PID))
	handle.WaitAll([]*handle.Handle{h}, time.Now().Add(killWait), nil)
	return nil
}
