// Package spawn starts COMMAND: looked up as execvp does, the leader of a
// process group of its own, with the caller's signal mask, the terminal's
// foreground where reaper has it, a parent-death signal, and, where asked,
// born in a cgroup. Its failures carry the exit code a shell would give
// (127 not found, 126 not executable), and a failure of the kernel to make
// the process is told apart from one to execute COMMAND. It never waits:
// the supervisor's event loop reaps.
package spawn

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/reaper-init/reaper/reaper/exitcode"
	"github.com/reaper-init/reaper/signals"
)

// StartError says why COMMAND could not be started, and with which exit code
// reaper reports it.
type StartError struct {
	Command string // argv[0], as given
	Code    int    // exitcode.NotFound, exitcode.CannotExec or exitcode.Internal
	Err     error
	// FromClone is set when the kernel refused to make the process (clone3
	// with CLONE_INTO_CGROUP), not to execute COMMAND: starting it outside
	// the cgroup may work.
	FromClone bool
}

// Error returns "COMMAND: reason", as a shell words it.
func (e *StartError) Error() string {
	return e.Command + ": " + e.Err.Error()
}

// Unwrap returns the underlying error.
func (e *StartError) Unwrap() error { return e.Err }

// defaultPath is what execvp searches when PATH is unset.
const defaultPath = "/usr/local/bin:/usr/bin:/bin"

// LookPath finds name the way execvp does: a name with a slash is used as
// it is; otherwise each PATH entry is tried, and a file that exists but may
// not be executed is reported only when no later entry has an executable.
func LookPath(name string) (string, error) {
	if name == "" {
		return "", &StartError{Command: name, Code: exitcode.NotFound, Err: errors.New("empty command name")}
	}
	if strings.Contains(name, "/") {
		if _, err := os.Stat(name); err != nil {
			// As sh and bash: a path that exists but cannot be reached (a
			// directory on the way that may not be searched) is 126.
			return "", &StartError{Command: name, Code: execCode(err), Err: ErrnoOf(err)}
		}
		return name, nil
	}
	path, ok := os.LookupEnv("PATH")
	if !ok {
		path = defaultPath
	}
	var denied error
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		candidate := filepath.Join(dir, name)
		err := executable(candidate)
		if err == nil {
			return candidate, nil
		}
		if denied == nil && execCode(err) != exitcode.NotFound {
			denied = err
		}
	}
	if denied != nil {
		return "", &StartError{Command: name, Code: exitcode.CannotExec, Err: denied}
	}
	return "", &StartError{Command: name, Code: exitcode.NotFound, Err: errors.New("command not found")}
}

// executable checks that path is a regular file reaper's effective ids may
// execute.
func executable(path string) error {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return syscall.EACCES
	}
	// Faccessat emulates AT_EACCESS where faccessat2 is missing or refused
	// (ENOSYS, or EPERM from an old container seccomp profile).
	return unix.Faccessat(unix.AT_FDCWD, path, unix.X_OK, unix.AT_EACCESS)
}

// execCode is the exit code of a COMMAND that could not be reached or
// executed because of err, as a shell's: 127 when it does not exist (ENOENT,
// ENOTDIR), 126 otherwise.
func execCode(err error) int {
	if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ENOTDIR) {
		return exitcode.NotFound
	}
	return exitcode.CannotExec
}

// ErrnoOf returns the errno inside err, so that messages read like a
// shell's: "no such file or directory", not "stat x: no such file...".
func ErrnoOf(err error) error {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return err
}

// Options are the per-run choices that shape how COMMAND starts.
type Options struct {
	Foreground bool             // give COMMAND's group the terminal on fd 0
	Pdeathsig  syscall.Signal   // sent to COMMAND when reaper's thread dies; 0 for none
	Env        []string         // COMMAND's environment
	PIDVars    []string         // variables of Env to set to COMMAND's pid (through the trampoline)
	Ignore     []syscall.Signal // signals COMMAND starts with ignored (through the trampoline)
	Mask       unix.Sigset_t    // COMMAND's signal mask: the one reaper was started with
	CgroupFD   int              // the cgroup COMMAND is born in (clone3), or -1
	Dir        string           // the directory COMMAND starts in; "": reaper's
}

// Start starts COMMAND, found at path (see LookPath), as the leader of a
// new process group and returns its pid. The child gets opts.Mask, default
// dispositions for every signal reaper catches but those opts.Ignore
// names, fds 0-2 and whatever reaper's caller passed without
// close-on-exec, and the original RLIMIT_NOFILE (syscall.ForkExec restores
// it). Start never waits for the child: the event loop reaps it. It must run on the thread that stays for reaper's
// whole life: the parent-death signal fires when the forking thread exits,
// and the child's signal mask is that thread's.
func Start(path string, argv []string, opts Options) (int, error) {
	env := opts.Env
	if t := (trampoline{pidVars: opts.PIDVars, ignore: opts.Ignore, mask: signals.Members(opts.Mask)}); t.needed() {
		env = t.env(env, os.Getpid(), path)
		path = "/proc/self/exe" // in the child: reaper's own file
	}
	attr := &syscall.ProcAttr{
		Dir:   opts.Dir,
		Env:   env,
		Files: []uintptr{0, 1, 2},
		Sys: &syscall.SysProcAttr{
			Setpgid:    true,
			Foreground: opts.Foreground,
			Ctty:       0,
			Pdeathsig:  opts.Pdeathsig,
		},
	}
	if opts.CgroupFD >= 0 {
		attr.Sys.UseCgroupFD, attr.Sys.CgroupFD = true, opts.CgroupFD
	}
	// The child gets the forking thread's mask: the caller's, for the fork
	// alone (nothing on this thread may raise SIGTTOU meanwhile).
	own := BlockThreadSignals()
	setThreadMask(opts.Mask)
	pid, err := syscall.ForkExec(path, argv, attr)
	setThreadMask(own)
	if err != nil {
		return 0, startError(argv, opts, err)
	}
	return pid, nil
}

// startError maps a ForkExec failure to an exit code: fork itself failing
// (no memory, pids.max reached) is reaper's failure; anything execve says
// means COMMAND cannot be executed. Some errors can come from clone3 as
// well as from execve: ENOSYS (no clone3, before Linux 5.3) and E2BIG
// (Linux 5.3 to 5.6: clone3 without CLONE_INTO_CGROUP refuses the larger
// clone_args). execve says E2BIG only for arguments and environment larger
// than the kernel's minimum limit of 32 pages; below that, E2BIG is
// clone3's.
func startError(argv []string, opts Options, err error) error {
	code := exitcode.CannotExec
	var fromClone bool
	switch {
	case errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.ENOMEM):
		code = exitcode.Internal
		err = fmt.Errorf("cannot fork: %w", err)
	case opts.CgroupFD >= 0 && errors.Is(err, syscall.ENOSYS):
		fromClone = true
	case opts.CgroupFD >= 0 && errors.Is(err, syscall.E2BIG) && argSize(argv, opts.Env) < execMinArgMax:
		fromClone = true
	}
	if fromClone {
		code = exitcode.Internal
		err = fmt.Errorf("cannot start a process in a cgroup (clone3: %w)", err)
	}
	return &StartError{Command: argv[0], Code: code, Err: err, FromClone: fromClone}
}

// execMinArgMax is the least room execve gives arguments and environment
// together (32 pages of 4 KiB, whatever the stack limit), less a margin for
// the interpreter line of a script.
const execMinArgMax = 32*4096 - 4096

// argSize is how much room execve needs for argv and env: each string with
// its NUL, and a pointer each.
func argSize(argv, env []string) int {
	n := 0
	for _, list := range [][]string{argv, env} {
		for _, s := range list {
			n += len(s) + 1 + 8
		}
	}
	return n
}

// The terminal driver answers a foreground change (or a write) by a
// background process with SIGTTOU, and reaper catches SIGTTOU to forward it:
// it would take its own for one sent from outside, and the driver would
// repeat the interrupted call for ever. So the thread that hands the
// terminal over, the event loop's, which also forks COMMAND, keeps SIGTTOU
// blocked: the driver then lets it go ahead without a signal, and a SIGTTOU
// sent to the process from outside is delivered to another thread and
// forwarded as usual.
var threadSignals = func() *unix.Sigset_t {
	set := signals.Sigset(unix.SIGTTOU)
	return &set
}()

// BlockThreadSignals blocks SIGTTOU on the calling thread, which must be
// locked to its goroutine, and returns the mask the thread had before.
func BlockThreadSignals() unix.Sigset_t {
	var old unix.Sigset_t
	unix.PthreadSigmask(unix.SIG_BLOCK, threadSignals, &old)
	return old
}

// setThreadMask gives the calling thread the signal mask mask.
func setThreadMask(mask unix.Sigset_t) {
	unix.PthreadSigmask(unix.SIG_SETMASK, &mask, nil)
}
