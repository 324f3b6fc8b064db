// Command harness runs one command under observation and reports what it
// left behind, for the integration tests:
//
//	harness [-cgroup DIR]... -- COMMAND [ARGS...]
//
// It joins each cgroup DIR, becomes a child subreaper and starts COMMAND
// with fds 0-2. It writes "pid N" to fd 3 once COMMAND runs. When COMMAND
// exits, everything COMMAND left running has been reparented to the harness,
// and every zombie COMMAND did not reap too: the harness lists both, then
// kills and reaps them, and writes one JSON line to fd 3:
//
//	{"code": 0, "signal": 0, "survivors": ["sleep 100"], "zombies": []}
//
// As the init of a PID namespace of the test's:
//
//	harness -init -pid-max N
//
// it sets the namespace's kernel.pid_max to N (Linux 6.14 and later keep
// pid_max per namespace), writes "ready" to stdout and reaps whatever is
// orphaned to it until it is killed.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

type cgroups []string

func (c *cgroups) String() string     { return strings.Join(*c, ",") }
func (c *cgroups) Set(s string) error { *c = append(*c, s); return nil }

type result struct {
	Code      int      `json:"code"`
	Signal    int      `json:"signal"`
	Core      bool     `json:"core"` // it dumped core
	Survivors []string `json:"survivors"`
	Zombies   []string `json:"zombies"`
	// InCgroup lists the processes left in the first -cgroup group and its
	// children, the harness aside.
	InCgroup []int `json:"in_cgroup"`
	// ExitNS is CLOCK_MONOTONIC, in nanoseconds, when COMMAND's exit was
	// seen.
	ExitNS int64 `json:"exit_ns"`
}

func main() {
	var dirs cgroups
	flag.Var(&dirs, "cgroup", "cgroup directory to join (repeatable)")
	leave := flag.Bool("leave", false, "leave what COMMAND left running (to init, once the harness exits)")
	asInit := flag.Bool("init", false, "be the init of a PID namespace: set pid_max, reap for ever")
	pidMax := flag.Int("pid-max", 0, "with -init: the namespace's kernel.pid_max")
	flag.Parse()
	if *asInit {
		namespaceInit(*pidMax)
	}
	report := os.NewFile(3, "report")
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "harness:", err)
		os.Exit(111)
	}
	// Whatever the test process inherited stops here: COMMAND gets 0-2.
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		fail(err)
	}
	for _, dir := range dirs {
		if err := os.WriteFile(dir+"/cgroup.procs", []byte(strconv.Itoa(os.Getpid())), 0); err != nil {
			fail(err)
		}
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fail(err)
	}
	path, err := exec.LookPath(flag.Arg(0))
	if err != nil {
		fail(err)
	}
	pid, err := syscall.ForkExec(path, flag.Args(), &syscall.ProcAttr{Env: os.Environ(), Files: []uintptr{0, 1, 2}})
	if err != nil {
		fail(err)
	}
	fmt.Fprintf(report, "pid %d\n", pid)
	var ws syscall.WaitStatus
	for {
		_, err = syscall.Wait4(pid, &ws, 0, nil)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		fail(err)
	}
	var now unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &now)
	res := result{ExitNS: now.Nano(), Code: ws.ExitStatus(), Survivors: []string{}, Zombies: []string{}, InCgroup: []int{}}
	if len(dirs) > 0 {
		res.InCgroup = cgroupProcs(dirs[0])
	}
	if ws.Signaled() {
		res.Signal, res.Core = int(ws.Signal()), ws.CoreDump()
	}
	for _, p := range descendants(os.Getpid()) {
		if p.state == 'Z' {
			res.Zombies = append(res.Zombies, p.String())
		} else {
			res.Survivors = append(res.Survivors, p.String())
		}
	}
	if !*leave {
		cleanUp()
	}
	line, _ := json.Marshal(res)
	report.Write(append(line, '\n'))
}

// cgroupProcs lists the processes in dir and below it, except the harness.
func cgroupProcs(dir string) []int {
	var pids []int
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		data, _ := os.ReadFile(filepath.Join(path, "cgroup.procs"))
		for _, f := range strings.Fields(string(data)) {
			if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	return pids
}

type proc struct {
	pid   int
	state byte
	start string // start time from /proc/PID/stat: with pid, an identity
	cmd   string
}

func (p proc) String() string { return fmt.Sprintf("%d %c %s", p.pid, p.state, p.cmd) }

// descendants walks /proc/PID/task/*/children from root.
func descendants(root int) []proc {
	var out []proc
	queue := []int{root}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		for _, task := range tasks {
			data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, task.Name()))
			for _, f := range strings.Fields(string(data)) {
				child, _ := strconv.Atoi(f)
				stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", child))
				if err != nil {
					continue
				}
				p := proc{pid: child, state: '?'}
				if i := bytes.LastIndexByte(stat, ')'); i > 0 {
					if f := strings.Fields(string(stat[i+1:])); len(f) > 19 {
						p.state, p.start = f[0][0], f[19]
					}
				}
				cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", child))
				p.cmd = strings.TrimSpace(string(bytes.ReplaceAll(cmd, []byte{0}, []byte{' '})))
				out = append(out, p)
				queue = append(queue, child)
			}
		}
	}
	return out
}

// cleanUp kills whatever is left below the harness and reaps it all. Every
// process killed here is a descendant of the harness, so of this test.
func cleanUp() {
	for {
		for _, p := range descendants(os.Getpid()) {
			kill(p)
		}
		var ws syscall.WaitStatus
		_, err := syscall.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, syscall.ECHILD) {
			return
		}
	}
}

// kill SIGKILLs p through a pidfd, after checking that the pid still names
// the process the walk found.
func kill(p proc) {
	fd, err := unix.PidfdOpen(p.pid, 0)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.pid))
	if err != nil {
		return
	}
	if i := bytes.LastIndexByte(stat, ')'); i > 0 {
		if f := strings.Fields(string(stat[i+1:])); len(f) > 19 && f[19] == p.start {
			unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
		}
	}
}

// namespaceInit sets the namespace's pid_max, says "ready" and reaps.
func namespaceInit(pidMax int) {
	if err := os.WriteFile("/proc/sys/kernel/pid_max", []byte(strconv.Itoa(pidMax)), 0); err != nil {
		fmt.Fprintln(os.Stderr, "harness: pid_max of this namespace:", err)
		os.Exit(111)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGCHLD)
	fmt.Println("ready")
	for {
		var ws syscall.WaitStatus
		if _, err := syscall.Wait4(-1, &ws, 0, nil); errors.Is(err, syscall.ECHILD) {
			<-sigs
		}
	}
}
