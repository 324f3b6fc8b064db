package integration

// Benchmarks of reaper side by side with its peers, in one invocation:
//
//	apt-get install tini dumb-init catatonit   # the peers, where missing
//	go test -p 1 -run '^$' -bench . -benchtime 1x -timeout 60m ./integration/...
//
// Each benchmark runs every shim installed here, interleaved where it can,
// and prints a table; this machine is shared and noisy, so the ratios
// measured together are what to read. Variables: REAPER_BENCH_RUNS (start
// to exit runs per shim, default 300), REAPER_BENCH_IDLE (idle window,
// default 60s), REAPER_BENCH_SIGNALS (forwarded signals, default 10000),
// REAPER_BENCH_ORPHANS (default 10000), REAPER_BENCH_TEARDOWNS (trees per
// shim and size, default 2), REAPER_BENCH_PODS (deletions per pod, default
// 3, in engines/kube_test.go: it needs the Kubernetes test bed). The
// benchmarks of real services and the OpenClaw gateway are in the packages
// services and systemd.

import (
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/reaper-init/reaper/integration/itest"
)

// shim is one init shim under comparison.
type shim struct {
	name string
	path string
	// argv builds the command line that runs command under the shim.
	argv func(command ...string) []string
}

// shims returns reaper and every peer installed here.
func shims(b *testing.B, reaperFlags ...string) []shim {
	b.Helper()
	all := []shim{{name: "reaper", path: itest.Bin().Reaper, argv: func(c ...string) []string {
		return append(append(append([]string{itest.Bin().Reaper}, reaperFlags...), "--"), c...)
	}}}
	for _, p := range []struct{ name, path, flags string }{
		{"tini-static", "/usr/bin/tini-static", "-s"},
		{"tini", "/usr/bin/tini", "-s"},
		{"dumb-init", "/usr/bin/dumb-init", ""},
		{"catatonit", "/usr/bin/catatonit", ""},
	} {
		if _, err := os.Stat(p.path); err != nil {
			fmt.Printf("(%s is not installed: apt-get install tini dumb-init catatonit)\n", p.name)
			continue
		}
		p := p
		all = append(all, shim{name: p.name, path: p.path, argv: func(c ...string) []string {
			argv := []string{p.path}
			if p.flags != "" {
				argv = append(argv, p.flags)
			}
			if p.name != "dumb-init" {
				argv = append(argv, "--")
			}
			return append(argv, c...)
		}})
	}
	return all
}

func envDuration(name string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func us(d time.Duration) string { return fmt.Sprintf("%d µs", d.Microseconds()) }

// runOnce starts argv with stdio on /dev/null and waits for it: the time a
// caller (a shell, systemd, a CI runner) waits for the whole run.
func runOnce(b *testing.B, argv []string) time.Duration {
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer null.Close()
	start := time.Now()
	pid, err := syscall.ForkExec(argv[0], argv, &syscall.ProcAttr{Env: os.Environ(),
		Files: []uintptr{null.Fd(), null.Fd(), null.Fd()}})
	if err != nil {
		b.Fatal(err)
	}
	var ws syscall.WaitStatus
	if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil {
		b.Fatal(err)
	}
	took := time.Since(start)
	if !ws.Exited() || ws.ExitStatus() != 0 {
		b.Fatalf("%v: %v", argv, ws)
	}
	return took
}

func BenchmarkStartToExit(b *testing.B) {
	all := shims(b)
	all = append(all,
		// The least a Go init can do: catch the same signals, fork/exec,
		// wait, exit with the status (testdata/floor).
		shim{name: "Go floor", argv: func(c ...string) []string { return append([]string{itest.Bin().Floor}, c...) }},
		shim{name: "(no shim)", argv: func(c ...string) []string { return c }},
		// Under systemd's socket activation or watchdog, reaper starts
		// COMMAND through its trampoline (LISTEN_PID names COMMAND): both
		// through sh, which sets LISTEN_PID to its own pid and becomes
		// reaper, to tell what the trampoline costs.
		shim{name: "sh, exec reaper", argv: func(c ...string) []string {
			return append([]string{"/bin/sh", "-c", `exec "$0" -- "$@"`, itest.Bin().Reaper}, c...)
		}},
		shim{name: "sh, exec reaper with LISTEN_PID", argv: func(c ...string) []string {
			return append([]string{"/bin/sh", "-c", `LISTEN_PID=$$ LISTEN_FDS=0 exec "$0" -- "$@"`, itest.Bin().Reaper}, c...)
		}},
	)
	runs := itest.EnvInt("REAPER_BENCH_RUNS", 300)
	times := make([][]time.Duration, len(all))
	for r := 0; r < runs; r++ {
		for k := range all {
			i := (k + r) % len(all) // interleaved, in a rotating order
			times[i] = append(times[i], runOnce(b, all[i].argv("/bin/true")))
		}
	}
	var base, floor time.Duration
	for i, s := range all {
		slices.Sort(times[i])
		switch s.name {
		case "tini-static":
			base = itest.Percentile(times[i], 50)
		case "Go floor":
			floor = itest.Percentile(times[i], 50)
		}
	}
	ratio := func(d, to time.Duration) string {
		if to == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f×", float64(d)/float64(to))
	}
	var rows [][]string
	for i, s := range all {
		med := itest.Percentile(times[i], 50)
		rows = append(rows, []string{s.name, itest.Millis(med), itest.Millis(itest.Percentile(times[i], 90)), ratio(med, base), ratio(med, floor)})
		if s.name == "reaper" {
			b.ReportMetric(float64(med.Microseconds()), "reaper-µs/run")
			if floor > 0 {
				b.ReportMetric(float64(med)/float64(floor), "ratio-vs-floor")
			}
		}
	}
	itest.Table(fmt.Sprintf("Start to exit: `SHIM -- /bin/true`, %d runs each, interleaved", runs),
		[]string{"shim", "median", "p90", "median vs tini-static", "median vs the Go floor"}, rows)
}

func BenchmarkBinarySize(b *testing.B) {
	var rows [][]string
	for _, s := range shims(b) {
		st, err := os.Stat(s.path)
		if err != nil {
			b.Fatal(err)
		}
		kind := "static"
		if f, err := elf.Open(s.path); err == nil {
			for _, p := range f.Progs {
				if p.Type == elf.PT_INTERP {
					kind = "dynamic"
				}
			}
			if f.Section(".symtab") == nil {
				kind += ", stripped"
			}
			f.Close()
		}
		rows = append(rows, []string{s.name, fmt.Sprintf("%.2f MiB", float64(st.Size())/(1<<20)), kind})
		if s.name == "reaper" {
			b.ReportMetric(float64(st.Size())/(1<<20), "reaper-MiB")
		}
	}
	itest.Table("Binary", []string{"shim", "size", "kind"}, rows)
}

func BenchmarkIdle(b *testing.B) {
	itest.RequireRoot(b)
	idle := envDuration("REAPER_BENCH_IDLE", 60*time.Second)
	all := shims(b, "-v") // reaper with its logger on, as asked
	cg := itest.NewCgroup(b, 64)
	defer cg.Remove(b)
	type running struct {
		cmd    *exec.Cmd
		before map[string]int
		rss    int
		thr    int
	}
	var procs []*running
	for _, s := range all {
		argv := s.argv("sleep", "100000")
		cmd := exec.Command(itest.Bin().Harness, append([]string{"-cgroup", cg.V2, "-cgroup", cg.Pids, "--"}, argv...)...)
		if cg.Pids == "" {
			cmd.Args = append([]string{itest.Bin().Harness, "-cgroup", cg.V2, "--"}, argv...)
		}
		r, w, _ := os.Pipe()
		cmd.ExtraFiles = []*os.File{w}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		w.Close()
		var line [64]byte
		n, _ := r.Read(line[:])
		r.Close()
		var pid int
		fmt.Sscanf(string(line[:n]), "pid %d", &pid)
		procs = append(procs, &running{cmd: &exec.Cmd{Process: &os.Process{Pid: pid}}})
		defer cmd.Wait()
	}
	// Let every shim start its sleep and settle.
	time.Sleep(500 * time.Millisecond)
	for _, p := range procs {
		p.before = itest.ProcStatus(p.cmd.Process.Pid, true, "voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")
		st := itest.ProcStatus(p.cmd.Process.Pid, false, "VmRSS", "Threads")
		p.rss, p.thr = st["VmRSS"], st["Threads"]
	}
	time.Sleep(idle)
	var rows [][]string
	for i, p := range procs {
		after := itest.ProcStatus(p.cmd.Process.Pid, true, "voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")
		vol := after["voluntary_ctxt_switches"] - p.before["voluntary_ctxt_switches"]
		invol := after["nonvoluntary_ctxt_switches"] - p.before["nonvoluntary_ctxt_switches"]
		rows = append(rows, []string{all[i].name, fmt.Sprintf("%.2f MiB", float64(p.rss)/1024), strconv.Itoa(p.thr),
			strconv.Itoa(vol), strconv.Itoa(invol)})
		if all[i].name == "reaper" {
			b.ReportMetric(float64(p.rss)/1024, "reaper-RSS-MiB")
			b.ReportMetric(float64(vol), "reaper-wakeups")
		}
		syscall.Kill(p.cmd.Process.Pid, syscall.SIGTERM)
	}
	itest.Table(fmt.Sprintf("Idle: `SHIM -- sleep`, RSS after start, context switches over %v", idle),
		[]string{"shim", "RSS", "threads", "voluntary switches", "involuntary"}, rows)
}

func BenchmarkForwardingLatency(b *testing.B) {
	itest.RequireRoot(b)
	n := itest.EnvInt("REAPER_BENCH_SIGNALS", 10000)
	all := shims(b)
	all = append(all, shim{name: "(no shim)", argv: func(c ...string) []string { return c }})
	var rows [][]string
	for _, s := range all {
		stamps := itest.NewFIFO(b, "stamps-"+s.name)
		sess := itest.Start(b, itest.Opts{Command: s.argv(itest.Bin().Helper, "stamp", stamps.Path)})
		target := sess.Child
		helper := stamps.Ready(b)
		if s.name == "(no shim)" {
			target = helper
		}
		lat := make([]time.Duration, 0, n)
		for i := 0; i < n; i++ {
			sent := itest.MonotonicNS()
			syscall.Kill(target, syscall.SIGUSR1)
			got, err := strconv.ParseInt(stamps.Next(b), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Duration(got-sent))
		}
		syscall.Kill(target, syscall.SIGTERM)
		sess.Wait()
		slices.Sort(lat)
		rows = append(rows, []string{s.name, us(itest.Percentile(lat, 50)), us(itest.Percentile(lat, 99)), us(lat[len(lat)-1])})
		if s.name == "reaper" {
			b.ReportMetric(float64(itest.Percentile(lat, 99).Microseconds()), "reaper-p99-µs")
		}
	}
	itest.Table(fmt.Sprintf("Forwarding latency: kill(shim, SIGUSR1) to the child's handler, %d signals, one at a time", n),
		[]string{"shim", "p50", "p99", "max"}, rows)
}

func BenchmarkOrphanStorm(b *testing.B) {
	itest.RequireRoot(b)
	n := itest.EnvInt("REAPER_BENCH_ORPHANS", 10000)
	var rows [][]string
	for _, s := range shims(b) {
		done := itest.NewFIFO(b, "done-"+s.name)
		// Each (true &) is a subshell that forks a background job and exits
		// at once: the job is orphaned, running or already a zombie.
		script := fmt.Sprintf(`i=0; while [ $i -lt %d ]; do (true &); i=$((i+1)); done; echo done > %s; exec sleep 100000`, n, done.Path)
		sess := itest.Start(b, itest.Opts{PidsMax: 4096, Command: s.argv("sh", "-c", script)})
		shimPID := sess.Child
		peak, samples := 0, 0
		finished := make(chan time.Time, 1)
		go func() { done.Next(b); finished <- time.Now() }()
		var doneAt time.Time
		var drained time.Duration
		for {
			z := itest.ZombiesOf(shimPID)
			samples++
			peak = max(peak, z)
			if doneAt.IsZero() {
				select {
				case doneAt = <-finished:
				default:
				}
			} else if z == 0 {
				drained = time.Since(doneAt)
				break
			}
			time.Sleep(500 * time.Microsecond)
		}
		sess.Cgroup.Kill() // measured; some peers do not stop on SIGTERM here
		sess.Wait()
		rows = append(rows, []string{s.name, strconv.Itoa(peak), itest.Millis(drained), strconv.Itoa(samples)})
		if s.name == "reaper" {
			b.ReportMetric(float64(peak), "reaper-peak-zombies")
		}
	}
	itest.Table(fmt.Sprintf("Orphan storm: %d short-lived orphans as fast as sh can make them", n),
		[]string{"shim", "peak zombie backlog", "zero zombies after the storm ends", "samples"}, rows)
}

// mixedTree returns a body that starts coop cooperative and stubborn
// SIGTERM-ignoring leaves, and no other process, in rounds of four shapes:
// in COMMAND's group, in a session of its own, double forked below that,
// in a nested session.
func mixedTree(coop, stubborn int) string {
	shape := func(leaf string, rounds int) string {
		if rounds == 0 {
			return ""
		}
		return fmt.Sprintf(`i=0; while [ $i -lt %d ]; do
  sh -c "$%[2]s" &
  setsid sh -c '(sh -c "$%[2]s" &); setsid sh -c "$%[2]s" & exec sh -c "$%[2]s"' &
  i=$((i+1))
done
`, rounds, leaf)
	}
	return shape("LEAF", coop/4) + shape("STUBBORN", stubborn/4)
}

func BenchmarkTeardown(b *testing.B) {
	itest.RequireRoot(b)
	runs := itest.EnvInt("REAPER_BENCH_TEARDOWNS", 2)
	type scenario struct {
		name           string
		coop, stubborn int
	}
	scenarios := []scenario{{"N=12", 12, 0}, {"N=100", 100, 0}, {"N=1000", 1000, 0}, {"N=1000, 10% ignore SIGTERM, grace 1s", 900, 100}}
	exitLine := regexp.MustCompile(`teardown: (\d+) descendants`)
	for _, sc := range scenarios {
		var rows [][]string
		for _, s := range shims(b) {
			var took []time.Duration
			left := 0
			for r := 0; r < runs; r++ {
				tr := itest.Tree{Body: mixedTree(sc.coop, sc.stubborn), Ups: sc.coop/4*4 + sc.stubborn/4*4, PidsMax: 4096, NoReport: true}
				if s.name != "reaper" {
					tr.Shim = s.argv()
				} else {
					tr.Flags = []string{"--grace=1s"}
				}
				p := itest.Plant(b, false, tr)
				released := p.Release(b)
				res := p.Wait()
				took = append(took, time.Duration(res.ExitNS-released))
				left = max(left, len(res.Survivors))
				if s.name == "reaper" && !exitLine.MatchString(res.Stderr) {
					b.Errorf("no teardown summary in %s", res.Stderr)
				}
			}
			slices.Sort(took)
			rows = append(rows, []string{s.name, itest.Millis(itest.Percentile(took, 50)), itest.Millis(took[len(took)-1]), strconv.Itoa(left)})
			if s.name == "reaper" {
				b.ReportMetric(float64(itest.Percentile(took, 50).Microseconds())/1000, "reaper-ms/"+strings.Fields(sc.name)[0])
			}
		}
		if sc.stubborn == 0 {
			rows = append(rows, kernelFloor(b, sc.coop, runs))
		}
		itest.Table(fmt.Sprintf("Teardown, %s (%d trees each): from COMMAND's exit to the shim's exit", sc.name, runs),
			[]string{"shim", "median", "max", "survivors (most in one run)"}, rows)
	}
}

// kernelFloor is what no shim can beat: the same tree, left running by a
// COMMAND run without a shim, then SIGKILLed with one write to its
// cgroup's cgroup.kill; the time from that write until every process has
// exited, as pidfds report it: the kernel's share of a teardown (signal
// delivery and every process's exit, on the same CPUs). It leaves out the
// reaping, which init does here, in its own time.
func kernelFloor(b *testing.B, n, runs int) []string {
	var took []time.Duration
	for r := 0; r < runs; r++ {
		p := itest.Plant(b, false, itest.Tree{Body: mixedTree(n, 0), Ups: n / 4 * 4, PidsMax: 4096, Shim: []string{"env"}, Leave: true})
		p.Release(b)
		left := p.Wait().InCgroup
		if len(left) < n/4*4 { // more: a shell of the tree still on its way out
			b.Fatalf("%d processes left in the cgroup, want at least %d", len(left), n/4*4)
		}
		fds := itest.Pidfds(b, left)
		began := time.Now()
		p.Session.Cgroup.Kill()
		if !itest.AllExit(fds, itest.Deadline) {
			b.Fatalf("processes still running %v after cgroup.kill", itest.Deadline)
		}
		took = append(took, time.Since(began))
	}
	slices.Sort(took)
	return []string{"the kernel alone: one cgroup.kill, to every process exited", itest.Millis(itest.Percentile(took, 50)), itest.Millis(took[len(took)-1]), "0"}
}
