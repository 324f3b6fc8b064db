// Package guardian stops what a run left when reaper itself dies before
// its teardown ends: a SIGKILL from a CI runner's cancel, from systemd's
// stop timeout under KillMode=process, from a user's kill -9.
//
// The guardian is a copy of reaper, in a session of its own, and no
// descendant of reaper's: reaper starts it through an intermediate copy
// that starts it and exits at once, before reaper becomes a subreaper, so
// that it is reparented to whoever reaps reaper's orphans (init, or a
// subreaper above reaper) and nothing aimed at reaper's process group,
// session or tree reaches it. It holds the read end of a pipe whose write
// end only reaper holds, and sleeps in read(2). Once COMMAND is about to
// start, reaper writes the run's Spec into the pipe; when reaper ends
// normally it writes "done" last, and the guardian exits at once. When
// reaper dies, the pipe ends without "done": the guardian then SIGKILLs
// the run's cgroup leaf (cgroup.kill) and removes it, and SIGKILLs every
// process that carries the run's marker, with the instance sweep's rules
// (a pidfd, the owner and the marker checked again: never a process that
// is not the run's). The manager that killed reaper wanted everything
// gone, in a hurry: nothing waits for a grace period.
//
// PID 1 needs none: when it dies, the kernel kills its whole namespace.
package guardian

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/reaper-init/reaper/reaper/cgroup"
	"github.com/reaper-init/reaper/reaper/instance"
	"github.com/reaper-init/reaper/reaper/logs"
)

// stageVar tells a copy of reaper that it is the guardian's intermediate
// ("start:PID:DEV:INO") or the guardian ("guard:PID:DEV:INO"): reaper's
// pid, and the device and inode of reaper's file.
const stageVar = "REAPER_GUARD_OF"

// pipeFD is the descriptor of the copies' end of the pipe.
const pipeFD = 3

// done is what reaper writes last before it exits normally.
const done = "done\n"

// Spec is what a guardian needs to know of its run.
type Spec struct {
	Name   string // the run's instance name, for the log
	Marker string // the run's marker value (instance.Var's)
	// ParentDir, ParentPath and Leaf locate the run's cgroup, when it has
	// one: its parent's directory and path, and its name.
	ParentDir, ParentPath, Leaf string
	LogFormat                   string
}

// Guardian is reaper's side of a guardian.
type Guardian struct {
	intermediate int // the copy that starts the guardian, until it is reaped
	pipe         *os.File
}

// Launch starts the guardian's intermediate, which starts the guardian and
// exits. Call Settle before reaper becomes a subreaper (or the guardian
// would be reparented to reaper), then Arm before COMMAND starts, and
// Release at the end. PID 1 needs no guardian.
func Launch() (*Guardian, error) {
	r, w, err := os.Pipe() // close-on-exec: COMMAND never holds the write end
	if err != nil {
		return nil, fmt.Errorf("guardian: %w", err)
	}
	defer r.Close()
	pid, err := startCopy("start", os.Getpid(), r.Fd())
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("guardian: %w", err)
	}
	return &Guardian{intermediate: pid, pipe: w}, nil
}

// startCopy starts a copy of reaper at stage, for reaper (the pid), with
// pipe as its descriptor 3, in the root directory and a session of its
// own. Its argv names it for ps, and is a usage error should it ever run
// as a reaper.
func startCopy(stage string, reaper int, pipe uintptr) (int, error) {
	own := ownFile()
	if own == "" {
		return 0, errors.New("cannot stat /proc/self/exe")
	}
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		return 0, err
	}
	defer devNull.Close()
	env := []string{stageVar + "=" + stage + ":" + strconv.Itoa(reaper) + ":" + own}
	return syscall.ForkExec("/proc/self/exe", []string{"reaper", "--guardian-of=" + strconv.Itoa(reaper)},
		&syscall.ProcAttr{
			Dir:   "/",
			Env:   env,
			Files: []uintptr{devNull.Fd(), devNull.Fd(), 2, pipe},
			Sys:   &syscall.SysProcAttr{Setsid: true},
		})
}

// Settle waits until the intermediate has started the guardian and
// exited, and reaps it.
func (g *Guardian) Settle() error {
	if g.intermediate == 0 {
		return nil
	}
	var ws syscall.WaitStatus
	for {
		_, err := syscall.Wait4(g.intermediate, &ws, 0, nil)
		if !errors.Is(err, syscall.EINTR) {
			g.intermediate = 0
			if err == nil && (!ws.Exited() || ws.ExitStatus() != 0) {
				return fmt.Errorf("guardian: its start ended with %v", ws)
			}
			return err
		}
	}
}

// Arm tells the guardian what the run is: from now on, should reaper die,
// the guardian stops what carries spec's marker or lives in its leaf.
func (g *Guardian) Arm(spec Spec) error {
	data, err := json.Marshal(spec)
	if err == nil {
		_, err = g.pipe.Write(append(data, '\n'))
	}
	if err != nil {
		return fmt.Errorf("guardian: %w", err)
	}
	return nil
}

// Release tells the guardian that the run ended as it should, and waits
// (a second at most) until it has exited, without touching anything: so
// that whoever reaps reaper's orphans has it gone before reaper is.
func (g *Guardian) Release() error {
	_, err := g.pipe.WriteString(done)
	switch {
	case errors.Is(err, syscall.EPIPE):
		err = nil // it is gone already: nothing to release
	case err == nil:
		err = awaitReaderGone(int(g.pipe.Fd()), releaseWait)
	}
	if cerr := g.pipe.Close(); err == nil {
		err = cerr
	}
	return err
}

// releaseWait bounds how long Release waits for the guardian to exit.
const releaseWait = time.Second

// awaitReaderGone waits until the pipe whose write end is fd has no reader
// left (poll says POLLERR, whatever the events asked for), or wait passes.
func awaitReaderGone(fd int, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return errors.New("guardian: still running after " + wait.String())
		}
		fds := []unix.PollFd{{Fd: int32(fd)}}
		n, err := unix.Poll(fds, int(left.Milliseconds())+1)
		switch {
		case errors.Is(err, unix.EINTR):
		case err != nil:
			return fmt.Errorf("guardian: %w", err)
		case n > 0 && fds[0].Revents&(unix.POLLERR|unix.POLLHUP) != 0:
			return nil
		}
	}
}

// Run runs the guardian, or its intermediate, when reaper started this
// process as one (see Launch), and returns only when it is neither. Call
// it first in main.
func Run() {
	value, ok := os.LookupEnv(stageVar)
	if !ok {
		return
	}
	os.Unsetenv(stageVar)
	stage, reaper, ok := verify(value)
	switch {
	case !ok:
		return // not started by reaper: a stray variable, ignored
	case stage == "start":
		if _, err := startCopy("guard", reaper, pipeFD); err != nil {
			fmt.Fprintf(os.Stderr, "reaper: no guardian: %v\n", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(guard(reaper))
}

// verify reads stageVar's value and reports whether it was made for this
// process: it runs reaper's very file, and holds a pipe where reaper gave
// its copies theirs. (Reaper may have exited already: the pipe then holds
// its word.) A stray variable, or one copied from a guardian's
// environment, gains its setter nothing: a guardian signals only what its
// setter could (see instance.Sweep's trust rules), and only on its pipe's
// word.
func verify(value string) (stage string, reaper int, ok bool) {
	fields := strings.SplitN(value, ":", 4)
	if len(fields) != 4 || (fields[0] != "start" && fields[0] != "guard") {
		return "", 0, false
	}
	reaper, err := strconv.Atoi(fields[1])
	own := ownFile()
	if err != nil || reaper <= 1 || own == "" || fields[2]+":"+fields[3] != own {
		return "", 0, false
	}
	var st unix.Stat_t
	if unix.Fstat(pipeFD, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		return "", 0, false
	}
	return fields[0], reaper, true
}

// guard waits for reaper's end, and stops what its run left if it died. It
// returns the guardian's exit code.
func guard(reaper int) int {
	nameThreads("reaper-guard") // not "exe", nor reaper's own name: ps tells them apart
	// Nothing aimed at a terminal, a reload or a stop is for the guardian:
	// it ends when reaper's run does (systemd's KillMode=control-group
	// sends SIGTERM to every process of the unit, reaper's guardian too,
	// while reaper's teardown runs).
	signal.Ignore(syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGTERM, syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU)
	in := bufio.NewReader(os.NewFile(pipeFD, "reaper"))
	line, err := in.ReadString('\n')
	var spec Spec
	if err != nil || json.Unmarshal([]byte(line), &spec) != nil {
		return 0 // reaper ended, or died, before COMMAND started: nothing of the run to stop
	}
	// The leaf is opened now, while the run holds it: a group made later
	// under its name is not the run's.
	var leaf *cgroup.Leaf
	if spec.Leaf != "" {
		leaf, _ = cgroup.Open(spec.ParentDir, spec.ParentPath, spec.Leaf)
	}
	if word, _ := in.ReadString('\n'); word == done { // or reaper's death ends the pipe
		return 0
	}
	return spec.stop(reaper, leaf)
}

// stop stops what the run left: everything in its leaf, and every process
// that carries its marker. It returns the guardian's exit code: 1 when
// something may be left.
func (spec Spec) stop(reaper int, leaf *cgroup.Leaf) int {
	log, err := logs.New(logs.FD(2), spec.LogFormat, 0)
	if err != nil {
		log = logs.Discard()
	}
	log.Warn("reaper died before its run's teardown ended: its guardian stops what the run left", logs.Int("reaper", reaper),
		logs.String("instance", spec.Name))
	sweep := &instance.Sweep{
		Name: spec.Name, Self: os.Getpid(), StopSignal: syscall.SIGKILL, KillWait: 5 * time.Second, Log: log,
		Stop: func() bool { return false }, Kind: "leftover of a run whose reaper died",
	}
	if spec.Marker != "" {
		sweep.Marked = [][]byte{instance.Marker(spec.Marker)}
	}
	if leaf != nil {
		sweep.Stale = []*cgroup.Leaf{leaf}
	}
	if !sweep.Run() {
		return 1
	}
	return 0
}

// nameThreads names every thread of the process name (/proc/PID/comm, what
// ps and pgrep show).
func nameThreads(name string) {
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, task := range tasks {
		os.WriteFile("/proc/self/task/"+task.Name()+"/comm", []byte(name), 0)
	}
}

// ownFile is "DEV:INO" of the running executable, "" when it cannot be
// told.
func ownFile() string {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/exe", &st); err != nil {
		return ""
	}
	return strconv.FormatUint(uint64(st.Dev), 10) + ":" + strconv.FormatUint(st.Ino, 10)
}
