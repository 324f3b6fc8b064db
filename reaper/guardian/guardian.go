// Package guardian stops what a run left when reaper itself dies before
// its teardown ends: a SIGKILL from a CI runner's cancel, from systemd's
// stop timeout under KillMode=process, from a user's kill -9.
//
// The guardian is a copy of reaper, started first, as reaper's child in a
// session of its own, so that nothing aimed at reaper's process group or
// session reaches it, and no parent-death signal: it outlives reaper. It
// holds the read end of a pipe whose write end only reaper holds, and
// sleeps in read(2). Before COMMAND starts, reaper writes the run's Spec
// into the pipe. When reaper ends normally it SIGKILLs the guardian and
// reaps it, and the pipe never ends for it. When reaper dies, the pipe
// ends: the guardian (reparented to whoever reaps reaper's orphans) then
// SIGKILLs the run's cgroup leaf (cgroup.kill) and removes it, and
// SIGKILLs every process that carries the run's marker, with the instance
// sweep's rules (a pidfd, the owner and the marker checked again: never a
// process that is not the run's). The manager that killed reaper wanted
// everything gone, in a hurry: nothing waits for a grace period.
//
// Nothing waits for the guardian to be ready: its end of the pipe exists
// from the moment it is forked, and what reaper wrote waits there. The
// supervisor keeps it out of the tree it tears down (it is no descendant
// of COMMAND's).
//
// PID 1 needs none: when it dies, the kernel kills its whole namespace.
package guardian

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
	"github.com/reaper-init/reaper/reaper/procfs"
)

// stageVar tells a copy of reaper that it is a guardian: "guard:PID:DEV:INO",
// reaper's pid, and the device and inode of reaper's file.
const stageVar = "REAPER_GUARD_OF"

// pipeFD is the descriptor of the guardian's end of the pipe.
const pipeFD = 3

// Spec is what a guardian needs to know of its run.
type Spec struct {
	Name   string // the run's instance name, for the log
	Marker string // the run's marker value (instance.Var's)
	// ParentDir, ParentPath and Leaf locate the run's cgroup, when it has
	// one: its parent's directory and path, and its name.
	ParentDir, ParentPath, Leaf string
	LogFormat                   string
}

// Guardian is reaper's side of a guardian: its child.
type Guardian struct {
	pid    int
	pipe   *os.File
	reaped bool
}

// Launch starts the guardian, and returns at once. Call Arm before COMMAND
// starts, and Release at the end, from the goroutine that launched it
// (the guardian is that thread's child). PID 1 needs no guardian.
func Launch() (*Guardian, error) {
	own := procfs.ExeID()
	if own == "" {
		return nil, errors.New("guardian: cannot stat /proc/self/exe")
	}
	r, w, err := os.Pipe() // close-on-exec: COMMAND never holds the write end
	if err != nil {
		return nil, fmt.Errorf("guardian: %w", err)
	}
	defer r.Close()
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("guardian: %w", err)
	}
	defer devNull.Close()
	self := os.Getpid()
	// Its argv names it for ps, and is a usage error should it ever run as
	// a reaper.
	pid, err := syscall.ForkExec("/proc/self/exe", []string{"reaper", "--guardian-of=" + strconv.Itoa(self)},
		&syscall.ProcAttr{
			Dir:   "/",
			Env:   []string{stageVar + "=guard:" + strconv.Itoa(self) + ":" + own},
			Files: []uintptr{devNull.Fd(), devNull.Fd(), 2, r.Fd()},
			Sys:   &syscall.SysProcAttr{Setsid: true},
		})
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("guardian: %w", err)
	}
	return &Guardian{pid: pid, pipe: w}, nil
}

// PID returns the guardian's pid.
func (g *Guardian) PID() int { return g.pid }

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

// Reaped records that the guardian exited before its time, and was reaped:
// nothing guards the run any more.
func (g *Guardian) Reaped() { g.reaped = true }

// Lost reports whether the guardian exited before its time.
func (g *Guardian) Lost() bool { return g.reaped }

// Release ends the guardian of a run that ended as it should: SIGKILL
// (its pid is reaper's unreaped child's, which nobody else can hold), then
// reaps it, before its pipe ends.
func (g *Guardian) Release() error {
	var err error
	if !g.reaped {
		syscall.Kill(g.pid, syscall.SIGKILL)
		var ws syscall.WaitStatus
		for {
			if _, err = syscall.Wait4(g.pid, &ws, 0, nil); !errors.Is(err, syscall.EINTR) {
				break
			}
		}
		g.reaped = true
	}
	if cerr := g.pipe.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("guardian: %w", err)
	}
	return nil
}

// Run runs the guardian when reaper started this process as one (see
// Launch), and returns only when it is not. Call it first in main.
func Run() {
	value, ok := os.LookupEnv(stageVar)
	if !ok {
		return
	}
	os.Unsetenv(stageVar)
	reaper, ok := verify(value)
	if !ok {
		return // not started by reaper: a stray variable, ignored
	}
	os.Exit(guard(reaper))
}

// verify reads stageVar's value and reports whether it was made for this
// process: it runs reaper's very file, and holds a pipe where reaper gave
// its guardian its end. A stray variable, or one copied from a guardian's
// environment, gains its setter nothing: a guardian signals only what its
// setter could (see instance.Sweep's trust rules), and only on its pipe's
// word.
func verify(value string) (reaper int, ok bool) {
	fields := strings.SplitN(value, ":", 4)
	if len(fields) != 4 || fields[0] != "guard" {
		return 0, false
	}
	reaper, err := strconv.Atoi(fields[1])
	own := procfs.ExeID()
	if err != nil || reaper <= 1 || own == "" || fields[2]+":"+fields[3] != own {
		return 0, false
	}
	var st unix.Stat_t
	if unix.Fstat(pipeFD, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		return 0, false
	}
	return reaper, true
}

// guard waits for reaper's end, and stops what its run left if it died. It
// returns the guardian's exit code.
func guard(reaper int) int {
	procfs.NameThreads("reaper-guard") // not "exe", nor reaper's own name: ps tells them apart
	// Nothing aimed at a terminal, a reload or a stop is for the guardian:
	// it ends when reaper's run does (systemd's KillMode=control-group
	// sends SIGTERM to every process of the unit, reaper's guardian too,
	// while reaper's teardown runs).
	signal.Ignore(syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGTERM, syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU)
	in := bufio.NewReader(os.NewFile(pipeFD, "reaper"))
	line, err := in.ReadString('\n')
	var spec Spec
	if err != nil || json.Unmarshal([]byte(line), &spec) != nil {
		return 0 // reaper died before COMMAND started: nothing of the run to stop
	}
	// The leaf is opened now, while the run holds it: a group made later
	// under its name is not the run's.
	var leaf *cgroup.Leaf
	if spec.Leaf != "" {
		leaf, _ = cgroup.Open(spec.ParentDir, spec.ParentPath, spec.Leaf)
	}
	io.Copy(io.Discard, in) // until the pipe ends: reaper died (its normal end SIGKILLs the guardian first)
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
