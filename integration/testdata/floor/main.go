// Command floor is the least any Go init can do, the floor of the
// start-to-exit benchmark: built as reaper is, it catches the signals
// reaper catches (SIGCHLD, and every one it forwards), fork/execs COMMAND
// in a process group of its own, waits for it and exits with its status.
//
//	floor COMMAND [ARGS...]
package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"github.com/reaper-init/reaper/signals"
)

func main() {
	chld := make(chan os.Signal, 1)
	signal.Notify(chld, syscall.SIGCHLD)
	caught := make(chan os.Signal, 64)
	for _, sig := range signals.Forwardable() {
		signal.Notify(caught, sig)
	}
	path, err := exec.LookPath(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(127)
	}
	pid, err := syscall.ForkExec(path, os.Args[1:], &syscall.ProcAttr{
		Env: os.Environ(), Files: []uintptr{0, 1, 2}, Sys: &syscall.SysProcAttr{Setpgid: true},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(126)
	}
	var ws syscall.WaitStatus
	for {
		if _, err := syscall.Wait4(pid, &ws, 0, nil); err != syscall.EINTR {
			break
		}
	}
	if ws.Signaled() {
		os.Exit(128 + int(ws.Signal()))
	}
	os.Exit(ws.ExitStatus())
}
