package integration

// What reaper's guardian (reaper/guardian) costs, and how fast it acts:
//
//	go test -run '^$' -bench Guardian -benchtime 1x -timeout 30m ./integration/
//
// Variables: REAPER_BENCH_RUNS (start-to-exit runs each, default 300),
// REAPER_BENCH_IDLE (idle window, default 60s), REAPER_BENCH_KILLS (runs
// SIGKILLed per mode and size, default 10).

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/reaper-init/reaper/integration/itest"
)

// BenchmarkGuardianStart: start to exit of `reaper -- /bin/true` with the
// guardian (the default) and without, interleaved, beside the Go floor;
// and of `reaper -- sleep 0.1`, a COMMAND that outlasts the guardian's
// own start.
func BenchmarkGuardianStart(b *testing.B) {
	runs := itest.EnvInt("REAPER_BENCH_RUNS", 300)
	for _, command := range [][]string{{"/bin/true"}, {"/bin/sleep", "0.1"}} {
		all := []shim{
			{name: "reaper (guardian)", argv: func(c ...string) []string { return append([]string{itest.Bin().Reaper, "--"}, c...) }},
			{name: "reaper --guardian=off", argv: func(c ...string) []string {
				return append([]string{itest.Bin().Reaper, "--guardian=off", "--"}, c...)
			}},
			{name: "Go floor", argv: func(c ...string) []string { return append([]string{itest.Bin().Floor}, c...) }},
		}
		times := make([][]time.Duration, len(all))
		for r := 0; r < runs; r++ {
			for k := range all {
				i := (k + r) % len(all)
				times[i] = append(times[i], runOnce(b, all[i].argv(command...)))
			}
		}
		for i := range all {
			slices.Sort(times[i])
		}
		off := itest.Percentile(times[1], 50)
		var rows [][]string
		for i, s := range all {
			med := itest.Percentile(times[i], 50)
			rows = append(rows, []string{s.name, itest.Millis(med), itest.Millis(itest.Percentile(times[i], 90)),
				fmt.Sprintf("%.2f×", float64(med)/float64(off)), fmt.Sprintf("%+.2f ms", float64(med-off)/1e6)})
		}
		b.ReportMetric(float64(itest.Percentile(times[0], 50)-off)/1e3, "guardian-µs/"+filepath.Base(command[0]))
		itest.Table(fmt.Sprintf("Start to exit: `reaper -- %s`, %d runs each, interleaved (load average %s)", strings.Join(command, " "), runs, loadAverage()),
			[]string{"run", "median", "p90", "vs --guardian=off", "difference"}, rows)
	}
}

// BenchmarkGuardianIdle: the guardian of `reaper -- sleep` at rest: its
// memory, threads and wakeups, beside reaper's own.
func BenchmarkGuardianIdle(b *testing.B) {
	idle := envDuration("REAPER_BENCH_IDLE", 60*time.Second)
	cmd := exec.Command(itest.Bin().Reaper, "--", "sleep", "100000")
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Signal(syscall.SIGTERM)
	guard := guardianOf(b, cmd.Process.Pid)
	time.Sleep(500 * time.Millisecond) // let both settle
	keys := []string{"VmRSS", "RssAnon", "RssFile", "Threads"}
	switches := []string{"voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"}
	pids := []int{guard, cmd.Process.Pid}
	var status, before []map[string]int
	for _, pid := range pids {
		status = append(status, itest.ProcStatus(pid, false, keys...))
		before = append(before, itest.ProcStatus(pid, true, switches...))
	}
	time.Sleep(idle)
	var rows [][]string
	for i, name := range []string{"guardian (reaper-guard)", "reaper"} {
		after := itest.ProcStatus(pids[i], true, switches...)
		st := status[i]
		rows = append(rows, []string{name, kib(st["VmRSS"]), kib(st["RssAnon"]), kib(st["RssFile"]), kib(pss(pids[i])),
			strconv.Itoa(st["Threads"]), strconv.Itoa(after[switches[0]] - before[i][switches[0]])})
	}
	b.ReportMetric(float64(status[0]["VmRSS"])/1024, "guardian-RSS-MiB")
	itest.Table(fmt.Sprintf("At rest: `reaper -- sleep`, over %v (load average %s)", idle, loadAverage()),
		[]string{"process", "RSS", "anonymous", "file", "PSS", "threads", "voluntary switches"}, rows)
}

// BenchmarkGuardianKill: reaper SIGKILLed with N processes left (a third
// in COMMAND's group, the others in sessions of their own and ignoring
// SIGTERM), in cgroup mode and in /proc mode, interleaved: how long after
// the kill(2) every one of them has exited, as pidfds say, and (cgroup
// mode) the run's leaf cgroup is gone.
func BenchmarkGuardianKill(b *testing.B) {
	itest.RequireRoot(b)
	runs := itest.EnvInt("REAPER_BENCH_KILLS", 10)
	cg := itest.NewCgroup(b, 1024)
	defer cg.Remove(b)
	type cell struct{ gone, leaf []time.Duration }
	sizes := []int{3, 100}
	modes := []string{"on", "off"}
	cells := map[string]*cell{}
	for r := 0; r < runs; r++ {
		for _, n := range sizes {
			for k := range modes {
				mode := modes[(k+r)%len(modes)]
				gone, leaf := killOnce(b, cg, mode, n)
				key := fmt.Sprintf("%s/%d", mode, n)
				if cells[key] == nil {
					cells[key] = &cell{}
				}
				cells[key].gone = append(cells[key].gone, gone)
				if mode == "on" {
					cells[key].leaf = append(cells[key].leaf, leaf)
				}
			}
		}
	}
	var rows [][]string
	for _, n := range sizes {
		for _, mode := range modes {
			c := cells[fmt.Sprintf("%s/%d", mode, n)]
			slices.Sort(c.gone)
			slices.Sort(c.leaf)
			leaf := "-"
			if mode == "on" {
				leaf = itest.Millis(itest.Percentile(c.leaf, 50)) + " / " + itest.Millis(c.leaf[len(c.leaf)-1])
			}
			rows = append(rows, []string{strconv.Itoa(n), "--cgroup=" + mode, itest.Millis(itest.Percentile(c.gone, 50)), itest.Millis(c.gone[len(c.gone)-1]), leaf})
		}
	}
	itest.Table(fmt.Sprintf("reaper SIGKILLed: its leftovers gone, %d runs each, interleaved (load average %s)", runs, loadAverage()),
		[]string{"processes left", "mode", "all exited, median", "max", "leaf cgroup removed, median / max"}, rows)
}

// killOnce starts reaper with n processes below it, SIGKILLs it, and
// returns when they had all exited, and when the run's leaf cgroup was
// gone (cgroup mode), after the kill.
func killOnce(b *testing.B, cg *itest.Cgroup, mode string, n int) (gone, leaf time.Duration) {
	body := `sh -c "$LEAF" &` + "\n"
	if n > 1 {
		body += fmt.Sprintf(`i=0; while [ $i -lt %d ]; do setsid sh -c "$STUBBORN" & i=$((i+1)); done`+"\n", n-1-n/3)
		body += fmt.Sprintf(`i=0; while [ $i -lt %d ]; do sh -c "$LEAF" & i=$((i+1)); done`, n/3)
	}
	p := itest.Plant(b, false, itest.Tree{Flags: []string{"--cgroup=" + mode}, Ups: n, Cgroup: cg, Leave: true, NoReport: true, Body: body})
	fds := itest.Pidfds(b, p.Ups)
	leaves := itest.LeafDirs(cg)
	began := time.Now()
	p.Signal(syscall.SIGKILL)
	if !itest.AllExit(fds, itest.Deadline) {
		b.Fatalf("--cgroup=%s, %d processes: still running %v after reaper's SIGKILL", mode, n, itest.Deadline)
	}
	gone = time.Since(began)
	for mode == "on" && len(leaves) > 0 {
		if _, err := os.Stat(leaves[0]); err != nil {
			break
		}
		if time.Since(began) > itest.Deadline {
			b.Fatalf("leaf cgroup %s still there %v after reaper's SIGKILL", leaves[0], itest.Deadline)
		}
		time.Sleep(time.Millisecond)
	}
	leaf = time.Since(began)
	p.Wait()
	return gone, leaf
}

// guardianOf finds the guardian of the reaper whose pid is given: the
// process named reaper-guard whose command line names that pid.
func guardianOf(t testing.TB, reaper int) int {
	want := []byte("--guardian-of=" + strconv.Itoa(reaper) + "\x00")
	for end := time.Now().Add(itest.Deadline); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		dirs, _ := filepath.Glob("/proc/[0-9]*")
		for _, dir := range dirs {
			comm, _ := os.ReadFile(dir + "/comm")
			cmdline, _ := os.ReadFile(dir + "/cmdline")
			if string(comm) == "reaper-guard\n" && bytes.HasSuffix(cmdline, want) {
				pid, _ := strconv.Atoi(filepath.Base(dir))
				return pid
			}
		}
	}
	t.Fatalf("no guardian of reaper %d within %v", reaper, itest.Deadline)
	return 0
}

// pss returns the proportional set size of pid in KiB: its pages, each
// divided by the number of processes that share it (the guardian shares
// reaper's binary).
func pss(pid int) int {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "Pss:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return 0
}

func kib(n int) string { return fmt.Sprintf("%.2f MiB", float64(n)/1024) }

// loadAverage is the machine's 1, 5 and 15 minute load averages.
func loadAverage() string {
	data, _ := os.ReadFile("/proc/loadavg")
	return strings.Join(strings.Fields(string(data))[:3], ", ")
}
