package reaper

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// StartError says why COMMAND could not be started, and with which exit code
// reaper reports it.
type StartError struct {
	Command string
	Code    int // ExitNotFound, ExitCannotExec or ExitInternal
	Err     error
	// fromClone is set when the kernel refused to make the process (clone3
	// with CLONE_INTO_CGROUP), not to execute COMMAND.
	fromClone bool
}

func (e *StartError) Error() string {
	return e.Command + ": " + e.Err.Error()
}

func (e *StartError) Unwrap() error { return e.Err }

// defaultPath is what execvp searches when PATH is unset.
const defaultPath = "/usr/local/bin:/usr/bin:/bin"

// lookPath finds name the way execvp does: a name with a slash is used as
// it is; otherwise each PATH entry is tried, and a file that exists but may
// not be executed is reported only when no later entry has an executable.
func lookPath(name string) (string, error) {
	if name == "" {
		return "", &StartError{Command: name, Code: ExitNotFound, Err: errors.New("empty command name")}
	}
	if strings.Contains(name, "/") {
		if _, err := os.Stat(name); err != nil {
			// As sh and bash: a path that exists but cannot be reached (a
			// directory on the way that may not be searched) is 126.
			return "", &StartError{Command: name, Code: execCode(err), Err: errnoOf(err)}
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
		if denied == nil && execCode(err) != ExitNotFound {
			denied = err
		}
	}
	if denied != nil {
		return "", &StartError{Command: name, Code: ExitCannotExec, Err: denied}
	}
	return "", &StartError{Command: name, Code: ExitNotFound, Err: errors.New("command not found")}
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
		return ExitNotFound
	}
	return ExitCannotExec
}

// errnoOf returns the errno inside err, so that messages read like a
// shell's: "no such file or directory", not "stat x: no such file...".
func errnoOf(err error) error {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return err
}

// spawnOptions are the per-run choices that shape how COMMAND starts.
type spawnOptions struct {
	foreground bool           // give COMMAND's group the terminal on fd 0
	pdeathsig  syscall.Signal // sent to COMMAND when reaper's thread dies; 0 for none
	env        []string       // COMMAND's environment
	pidVars    []string       // variables of env to set to COMMAND's pid (through the trampoline)
	mask       unix.Sigset_t  // COMMAND's signal mask: the one reaper was started with
	cgroupFD   int            // the cgroup COMMAND is born in (clone3), or -1
}

// spawn starts COMMAND as the leader of a new process group and returns its
// pid. The child gets opts.mask, default dispositions for every signal
// reaper catches (ignored ones stay ignored), fds 0-2 and whatever reaper's
// caller passed without close-on-exec, and the original RLIMIT_NOFILE
// (syscall.ForkExec restores it). spawn never waits for the child: the
// event loop reaps it. It must run on the thread that stays for reaper's
// whole life: the parent-death signal fires when the forking thread exits,
// and the child's signal mask is that thread's.
func spawn(argv []string, opts spawnOptions) (int, error) {
	path, err := lookPath(argv[0])
	if err != nil {
		return 0, err
	}
	env := opts.env
	if len(opts.pidVars) > 0 {
		env = trampolineEnv(env, os.Getpid(), opts.pidVars, path)
		path = "/proc/self/exe" // in the child: reaper's own file
	}
	attr := &syscall.ProcAttr{
		Env:   env,
		Files: []uintptr{0, 1, 2},
		Sys: &syscall.SysProcAttr{
			Setpgid:    true,
			Foreground: opts.foreground,
			Ctty:       0,
			Pdeathsig:  opts.pdeathsig,
		},
	}
	if opts.cgroupFD >= 0 {
		attr.Sys.UseCgroupFD, attr.Sys.CgroupFD = true, opts.cgroupFD
	}
	// The child gets the forking thread's mask: the caller's, for the fork
	// alone (nothing on this thread may raise SIGTTOU meanwhile).
	own := blockThreadSignals()
	setThreadMask(opts.mask)
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
func startError(argv []string, opts spawnOptions, err error) error {
	code := ExitCannotExec
	var fromClone bool
	switch {
	case errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.ENOMEM):
		code = ExitInternal
		err = fmt.Errorf("cannot fork: %w", err)
	case opts.cgroupFD >= 0 && errors.Is(err, syscall.ENOSYS):
		fromClone = true
	case opts.cgroupFD >= 0 && errors.Is(err, syscall.E2BIG) && argSize(argv, opts.env) < execMinArgMax:
		fromClone = true
	}
	if fromClone {
		code = ExitInternal
		err = fmt.Errorf("cannot start a process in a cgroup (clone3: %w)", err)
	}
	return &StartError{Command: argv[0], Code: code, Err: err, fromClone: fromClone}
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
