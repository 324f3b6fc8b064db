// Command helper is the payload the integration tests run under reaper.
//
//	helper record [-child FIFO2] [-busy DURATION] [-stay] FIFO
//	    writes "ready PID" to FIFO, then the name of each signal it receives,
//	    one per line, in order; exits 0 after a stop signal (TERM, INT, HUP,
//	    QUIT), or with -stay never (SIGKILL ends it). -child first starts a
//	    copy of itself in the same process group recording to FIFO2. -busy
//	    spins on the CPU for DURATION, then writes "busy done". -pid starts
//	    every line with the pid (FIFO may then be a file many helpers append
//	    to).
//	helper fds
//	    prints the numbers of its open file descriptors, one line, sorted.
//	helper blocked SIG,SIG... PROGRAM [ARGS...]
//	    executes PROGRAM with those signals blocked, as a caller of reaper
//	    may.
//	helper stamp FIFO
//	    writes "ready PID", then for each SIGUSR1 it receives the time of its
//	    arrival (CLOCK_MONOTONIC, ns); exits 0 on SIGTERM.
//	helper listen [-ignore-term|-note-term] ADDR FIFO
//	    listens on TCP ADDR, writes "listening PID" to FIFO and serves until
//	    a signal ends it (with -ignore-term SIGTERM is ignored; with
//	    -note-term each SIGTERM writes "listener-term PID" to FIFO, and the
//	    helper serves on).
//	helper notify MESSAGE
//	    sends MESSAGE ("\n" in it a newline) as one datagram to the socket
//	    $NOTIFY_SOCKET names ("@name" abstract), as sd_notify(3) does, and
//	    writes "sent PID" to stdout.
//	helper orphans N FIFO
//	    makes N orphans one after another and writes "orphan PID" for each,
//	    then "done", to FIFO, and sleeps until a stop signal. Each orphan
//	    exits only after its parent has exited, so it always ends as a
//	    zombie of the nearest subreaper.
//
// The helper must not send itself SIGURG, since it records every SIGURG it
// gets, nor hold cgroup files open, since it lists its descriptors: build it
// with -ldflags=-X=runtime.godebugDefault=asyncpreemptoff=1,containermaxprocs=0.
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/reaper-init/reaper/signals"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: helper record|fds ...")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "record":
		record(os.Args[2:])
	case "fds":
		fds()
	case "blocked":
		blocked(os.Args[2], os.Args[3:])
	case "stamp":
		stamp(os.Args[2])
	case "listen":
		listen(os.Args[2:])
	case "orphans":
		orphans(os.Args[2], os.Args[3])
	case "notify":
		notify(os.Args[2])
	case "orphan-parent":
		orphanParent(os.Args[2])
	case "orphan-child":
		io.Copy(io.Discard, os.Stdin) // returns when the parent has exited
	default:
		fmt.Fprintf(os.Stderr, "helper: unknown mode %q\n", os.Args[1])
		os.Exit(2)
	}
}

func record(args []string) {
	fs := flag.NewFlagSet("record", flag.ExitOnError)
	child := fs.String("child", "", "start a copy of the helper recording to this FIFO")
	busy := fs.Duration("busy", 0, "spin on the CPU this long before reporting 'busy done'")
	withPID := fs.Bool("pid", false, "start every line with the helper's pid (for a file shared by many)")
	stay := fs.Bool("stay", false, "record stop signals too, and never exit on one")
	fs.Parse(args)
	out, err := os.OpenFile(fs.Arg(0), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(2)
	}
	// The signals it exits on have a channel of their own: os/signal drops
	// what a full channel cannot take, and a storm can fill sigs.
	sigs, exits := make(chan os.Signal, 256), make(chan os.Signal, 8)
	var watch []os.Signal
	for _, sig := range signals.Forwardable() {
		switch sig {
		case syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT:
			if *stay {
				watch = append(watch, sig)
				continue
			}
			signal.Notify(exits, sig)
		default:
			watch = append(watch, sig)
		}
	}
	signal.Notify(sigs, watch...)
	if *child != "" {
		self, _ := os.Executable()
		if _, err := syscall.ForkExec(self, []string{"helper", "record", *child},
			&syscall.ProcAttr{Env: os.Environ(), Files: []uintptr{0, 1, 2}}); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(2)
		}
	}
	prefix := ""
	if *withPID {
		prefix = strconv.Itoa(os.Getpid()) + " "
	}
	line := func(s string) { out.Write([]byte(prefix + s + "\n")) }
	exit := func(sig os.Signal) {
		for len(sigs) > 0 { // what came before it
			line(signals.Name((<-sigs).(syscall.Signal)))
		}
		line(signals.Name(sig.(syscall.Signal)))
		os.Exit(0)
	}
	line("ready " + strconv.Itoa(os.Getpid()))
	if *busy > 0 {
		end := time.Now().Add(*busy)
		for time.Now().Before(end) {
			select {
			case sig := <-sigs:
				line(signals.Name(sig.(syscall.Signal)))
			case sig := <-exits:
				exit(sig)
			default:
			}
		}
		line("busy done")
	}
	for {
		select {
		case sig := <-sigs:
			line(signals.Name(sig.(syscall.Signal)))
		case sig := <-exits:
			exit(sig)
		}
	}
}

// fds lists /proc/self/fd without the descriptor used to read it, using raw
// system calls so that the Go runtime opens nothing of its own.
func fds() {
	dir, err := syscall.Open("/proc/self/fd", syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(2)
	}
	buf := make([]byte, 8192)
	var names []string
	for {
		n, err := syscall.ReadDirent(dir, buf)
		if err != nil || n == 0 {
			break
		}
		_, _, names = syscall.ParseDirent(buf[:n], -1, names)
	}
	var open []int
	for _, name := range names {
		if fd, err := strconv.Atoi(name); err == nil && fd != dir {
			open = append(open, fd)
		}
	}
	sort.Ints(open)
	s := make([]string, len(open))
	for i, fd := range open {
		s[i] = strconv.Itoa(fd)
	}
	fmt.Println(strings.Join(s, " "))
}

// orphans runs orphan-parent n times, reaping each parent itself.
func orphans(count, fifo string) {
	n, _ := strconv.Atoi(count)
	self, _ := os.Executable()
	for i := 0; i < n; i++ {
		pid, err := syscall.ForkExec(self, []string{"helper", "orphan-parent", fifo},
			&syscall.ProcAttr{Env: os.Environ(), Files: []uintptr{0, 1, 2}})
		if err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(2)
		}
		var ws syscall.WaitStatus
		syscall.Wait4(pid, &ws, 0, nil)
	}
	out, _ := os.OpenFile(fifo, os.O_WRONLY, 0)
	out.Write([]byte("done\n"))
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT)
	<-sigs
}

// orphanParent starts an orphan-child that reads a pipe only this process
// writes to, reports its pid and exits: the child sees end of file and exits
// after its parent is gone.
func orphanParent(fifo string) {
	r, w, err := os.Pipe()
	if err != nil {
		os.Exit(2)
	}
	self, _ := os.Executable()
	pid, err := syscall.ForkExec(self, []string{"helper", "orphan-child"},
		&syscall.ProcAttr{Env: os.Environ(), Files: []uintptr{r.Fd(), 1, 2}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(2)
	}
	out, _ := os.OpenFile(fifo, os.O_WRONLY, 0)
	fmt.Fprintf(out, "orphan %d\n", pid)
	runtime.KeepAlive(w) // the write end stays open until this process exits
}

func listen(args []string) {
	fs := flag.NewFlagSet("listen", flag.ExitOnError)
	ignoreTerm := fs.Bool("ignore-term", false, "ignore SIGTERM")
	noteTerm := fs.Bool("note-term", false, "note each SIGTERM, and serve on")
	fs.Parse(args)
	var terms chan os.Signal
	switch {
	case *ignoreTerm:
		signal.Ignore(syscall.SIGTERM)
	case *noteTerm:
		terms = make(chan os.Signal, 1)
		signal.Notify(terms, syscall.SIGTERM)
	}
	l, err := net.Listen("tcp", fs.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(2)
	}
	out, _ := os.OpenFile(fs.Arg(1), os.O_WRONLY, 0)
	fmt.Fprintf(out, "listening %d\n", os.Getpid())
	go func() {
		for range terms {
			fmt.Fprintf(out, "listener-term %d\n", os.Getpid())
		}
	}()
	for {
		c, err := l.Accept()
		if err == nil {
			c.Close()
		}
	}
}

func stamp(fifo string) {
	out, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	if err != nil {
		os.Exit(2)
	}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGTERM)
	fmt.Fprintf(out, "ready %d\n", os.Getpid())
	var ts syscall.Timespec
	for sig := range sigs {
		if sig == syscall.SIGTERM {
			os.Exit(0)
		}
		// clock_gettime through the vDSO is not in package syscall; the
		// raw system call costs a microsecond more, the same for every shim.
		syscall.Syscall(syscall.SYS_CLOCK_GETTIME, 1 /* CLOCK_MONOTONIC */, uintptr(unsafe.Pointer(&ts)), 0)
		fmt.Fprintf(out, "%d\n", ts.Nano())
	}
}

func blocked(list string, argv []string) {
	runtime.LockOSThread() // the mask is the thread's, and this one execs
	var sigs []syscall.Signal
	for _, name := range strings.Split(list, ",") {
		sig, err := signals.Parse(name)
		if err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(2)
		}
		sigs = append(sigs, sig)
	}
	set := signals.Sigset(sigs...)
	unix.PthreadSigmask(unix.SIG_BLOCK, &set, nil)
	path, err := exec.LookPath(argv[0])
	if err == nil {
		err = syscall.Exec(path, argv, os.Environ())
	}
	fmt.Fprintln(os.Stderr, "helper:", err)
	os.Exit(2)
}

func notify(message string) {
	addr := os.Getenv("NOTIFY_SOCKET")
	if strings.HasPrefix(addr, "@") {
		addr = "\x00" + addr[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err == nil {
		_, err = conn.Write([]byte(strings.ReplaceAll(message, `\n`, "\n")))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(2)
	}
	fmt.Printf("sent %d\n", os.Getpid())
}
