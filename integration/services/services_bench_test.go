package services

// How long each real service of services_test.go and postgres_test.go
// takes to stop, run directly, under tini and under reaper, in one run:
//
//	go test -run '^$' -bench ServiceStop -benchtime 1x -timeout 60m ./integration/
//
// REAPER_BENCH_STOPS sets the runs per service and runner (default 5).

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/reaper-init/reaper/integration/itest"
	"golang.org/x/sys/unix"
)

// stopCase is one service and the way it is stopped.
type stopCase struct {
	name string
	// start runs the service under r and returns once it serves.
	start func(b *testing.B, r runner) *itest.Session
	// before, if set, runs just before the stop signal.
	before func(b *testing.B, s *itest.Session)
	sig    syscall.Signal // 0: the service exits on its own (the CI job)
}

var stopCases = []stopCase{
	{name: "postgres, SIGTERM (smart, no session)", sig: syscall.SIGTERM,
		start: func(b *testing.B, r runner) *itest.Session { return startPostgres(b, r, nil, nil).s }},
	{name: "postgres, SIGINT (fast)", sig: syscall.SIGINT,
		start: func(b *testing.B, r runner) *itest.Session { return startPostgres(b, r, nil, nil).s }},
	{name: "nginx, SIGQUIT (graceful)", sig: syscall.SIGQUIT,
		start: func(b *testing.B, r runner) *itest.Session {
			s, _, _ := startNginx(b, r, "127.0.0.1:9")
			return s
		}},
	{name: "redis, SIGTERM (saves)", sig: syscall.SIGTERM,
		start: func(b *testing.B, r runner) *itest.Session {
			s, _, _, _ := startRedis(b, r)
			return s
		}},
	{name: "gunicorn, SIGTERM", sig: syscall.SIGTERM,
		start: func(b *testing.B, r runner) *itest.Session { return startGunicorn(b, r).Session }},
	{name: "gunicorn, SIGTERM right after SIGHUP", sig: syscall.SIGTERM,
		start: func(b *testing.B, r runner) *itest.Session { return startGunicorn(b, r).Session },
		before: func(b *testing.B, s *itest.Session) {
			mark := s.Stderr.Mark()
			s.Signal(syscall.SIGHUP)
			s.Stderr.WaitMatches(b, mark, gunicornHup, 1)
		}},
	{name: "CI job: pg_ctl and a redis daemon, from the job's exit", start: startCIJob},
}

// startCIJob runs the CI job of TestCIJobStartingDaemons under r.
func startCIJob(b *testing.B, r runner) *itest.Session {
	requireTools(b, redisPath, redisCLI)
	dir := itest.SharedDir(b)
	data := pgCluster(b, dir)
	o := r.opts(dir, nil, "sh", "-c", ciJob)
	o.Env = []string{"PGBIN=" + pgBin, "PGDATA=" + data, "DIR=" + dir,
		"PGPORT=" + itest.PortOf(itest.FreeAddr(b)), "REDISPORT=" + itest.PortOf(itest.FreeAddr(b))}
	return itest.Start(b, o)
}

// stopRunners are the columns: the service alone, then each shim as a
// child and as PID 1.
var stopRunners = []runner{{"", false}, {"tini", false}, {"reaper", false}, {"tini", true}, {"reaper", true}}

// stopTimes is what one run measured, in CLOCK_MONOTONIC nanoseconds.
type stopTimes struct {
	signalled, serviceGone, runnerGone int64
	survivors                          int
}

func BenchmarkServiceStop(b *testing.B) {
	itest.RequireRoot(b)
	requireTools(b, tiniPath)
	runs := itest.EnvInt("REAPER_BENCH_STOPS", 5)
	var rows, shares, services [][]string
	for _, c := range stopCases {
		took := make([][]time.Duration, len(stopRunners)) // the stop: signal (or job's exit) to the runner's exit
		own := make([][]time.Duration, len(stopRunners))  // the shim's share: the service's exit to the runner's exit
		svc := make([][]time.Duration, len(stopRunners))  // the service's share: the signal to its exit
		left := make([]int, len(stopRunners))
		for range runs {
			for i, r := range stopRunners { // interleaved
				m := measureStop(b, c, r)
				began := m.signalled
				if c.sig == 0 {
					began = m.serviceGone
				}
				took[i] = append(took[i], time.Duration(m.runnerGone-began))
				own[i] = append(own[i], time.Duration(m.runnerGone-m.serviceGone))
				svc[i] = append(svc[i], time.Duration(m.serviceGone-began))
				left[i] = max(left[i], m.survivors)
			}
		}
		row, share, service := []string{c.name}, []string{c.name}, []string{c.name}
		for i := range stopRunners {
			slices.Sort(took[i])
			slices.Sort(own[i])
			slices.Sort(svc[i])
			cell := fmt.Sprintf("%s (%s)", itest.Millis(itest.Percentile(took[i], 50)), itest.Millis(took[i][len(took[i])-1]))
			if left[i] > 0 {
				cell += fmt.Sprintf(", %d left", left[i])
			}
			row = append(row, cell)
			share = append(share, itest.Millis(itest.Percentile(own[i], 50)))
			service = append(service, itest.Millis(itest.Percentile(svc[i], 50)))
		}
		rows, shares, services = append(rows, row), append(shares, share), append(services, service)
	}
	header := []string{"service, stop"}
	for _, r := range stopRunners {
		header = append(header, r.String())
	}
	itest.Table(fmt.Sprintf("Stop time: the stop signal to the runner's exit, median (max) of %d runs each, interleaved", runs), header, rows)
	itest.Table("The service's share: the stop signal (the CI job: its exit) to the service's exit, median", header, services)
	itest.Table("The runner's own share: the service's exit to the runner's exit, median", header, shares)
}

// measureStop starts the service under r, stops it as c says, and times
// the stop.
func measureStop(b *testing.B, c stopCase, r runner) stopTimes {
	s := c.start(b, r)
	service := servicePID(b, s, r)
	gone := exitTime(b, service)
	if c.before != nil {
		c.before(b, s)
	}
	var m stopTimes
	if c.sig != 0 {
		// A service that acts on a stop at a tick of its own (redis's
		// serverCron, ten times a second) would otherwise be caught at
		// the same phase of it each run, a phase each runner shifts.
		time.Sleep(time.Duration(rand.Int64N(int64(100 * time.Millisecond))))
		m.signalled = itest.MonotonicNS()
		s.Signal(c.sig)
	}
	res := s.Wait()
	m.runnerGone, m.serviceGone, m.survivors = res.ExitNS, <-gone, len(res.Survivors)
	if want := 0; c.sig == 0 {
		want = 3
		if res.Status() != want {
			b.Fatalf("%s under %v: exit %d, want %d\n%s", c.name, r, res.Status(), want, res.Stderr)
		}
	} else if res.Status() != want || strings.Contains(res.Stderr, "warning: killed") {
		b.Fatalf("%s under %v: exit %d, want %d, nothing killed\n%s", c.name, r, res.Status(), want, res.Stderr)
	}
	return m
}

// servicePID returns the pid (as the test sees it) of the service's main
// process: the runner's child, or the shim's.
func servicePID(b *testing.B, s *itest.Session, r runner) int {
	pid := s.Child
	if r.pid1 {
		pid = firstChild(b, pid) // the shim, below unshare
	}
	if r.shim != "" {
		pid = firstChild(b, pid)
	}
	return pid
}

// firstChild waits until pid has a child that has run a program of its
// own (a child not yet past its execve has its parent's command line),
// other than reaper's guardian, which reaper starts first, and returns it.
func firstChild(b *testing.B, pid int) int {
	cmdlineOf := func(pid int) []byte {
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		return cmdline
	}
	parent := cmdlineOf(pid)
	for end := time.Now().Add(itest.Deadline); ; time.Sleep(time.Millisecond) {
		for _, kid := range itest.ChildrenOf(pid) {
			if cmdline := cmdlineOf(kid); len(cmdline) > 0 && !bytes.Equal(cmdline, parent) && !bytes.Contains(cmdline, []byte("--guardian-of=")) {
				return kid
			}
		}
		if time.Now().After(end) {
			b.Fatalf("%d started nothing within %v", pid, itest.Deadline)
		}
	}
}

// exitTime returns when pid exits, in CLOCK_MONOTONIC nanoseconds, as its
// pidfd reports it.
func exitTime(b *testing.B, pid int) <-chan int64 {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		b.Fatalf("pidfd of %d: %v", pid, err)
	}
	done := make(chan int64, 1)
	go func() {
		runtime.LockOSThread() // a thread of its own, woken by the exit alone
		defer unix.Close(fd)
		for {
			n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, int(itest.Deadline.Milliseconds()))
			if n > 0 || (err != nil && !errors.Is(err, unix.EINTR)) || (n == 0 && err == nil) {
				done <- itest.MonotonicNS()
				return
			}
		}
	}()
	return done
}
