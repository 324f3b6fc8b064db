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
}

func (e *StartError) Error() string {
	return e.Command + ": " + e.Err.Error()
}

func (e *StartError) Unwrap() error { return e.Err }

// fromExec reports whether the error is one execve(2) gives: about COMMAND,
// not about how reaper started it (clone3 into a cgroup, say).
func (e *StartError) fromExec() bool {
	for _, errno := range []syscall.Errno{syscall.ENOENT, syscall.EACCES, syscall.ENOEXEC, syscall.ETXTBSY,
		syscall.E2BIG, syscall.ELOOP, syscall.ENAMETOOLONG, syscall.EISDIR, syscall.ENOTDIR, syscall.ELIBBAD} {
		if errors.Is(e.Err, errno) {
			return true
		}
	}
	return e.Code == ExitNotFound
}

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
			return "", &StartError{Command: name, Code: ExitNotFound, Err: errnoOf(err)}
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
		if denied == nil && !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.ENOTDIR) {
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
	instance   string         // exported as InstanceVar
	cgroupFD   int            // the cgroup COMMAND is born in (clone3), or -1
}

// spawn starts COMMAND as the leader of a new process group and returns its
// pid. The child gets reaper's original signal mask, default dispositions
// for every signal reaper catches (ignored ones stay ignored), fds 0-2 and
// whatever reaper's caller passed without close-on-exec, the environment
// unchanged and the original RLIMIT_NOFILE (syscall.ForkExec restores it).
// spawn never waits for the child: the event loop reaps it. It must run on
// the thread that stays for reaper's whole life: the parent-death signal
// fires when the forking thread exits.
func spawn(argv []string, opts spawnOptions) (int, error) {
	path, err := lookPath(argv[0])
	if err != nil {
		return 0, err
	}
	attr := &syscall.ProcAttr{
		Env:   environment(opts.instance),
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
	pid, err := syscall.ForkExec(path, argv, attr)
	if err != nil {
		return 0, startError(argv[0], err)
	}
	return pid, nil
}

// environment is reaper's environment with InstanceVar set to instance, the
// one variable reaper sets for COMMAND.
func environment(instance string) []string {
	env := os.Environ()
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if !strings.HasPrefix(kv, InstanceVar+"=") {
			out = append(out, kv)
		}
	}
	return append(out, InstanceVar+"="+instance)
}

// startError maps a ForkExec failure to an exit code: fork itself failing
// (no memory, pids.max reached) is reaper's failure; anything execve says
// means COMMAND cannot be executed.
func startError(name string, err error) error {
	code := ExitCannotExec
	if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.ENOMEM) {
		code = ExitInternal
		err = fmt.Errorf("cannot fork: %w", err)
	}
	return &StartError{Command: name, Code: code, Err: err}
}
