package instance

import (
	"errors"
	"os"
	"strconv"
	"syscall"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/reaper-init/reaper/reaper/cgroup"
	"github.com/reaper-init/reaper/reaper/handle"
	"github.com/reaper-init/reaper/reaper/logs"
	"github.com/reaper-init/reaper/reaper/procfs"
)

// Sweep tears down what the previous run of an instance left behind; or,
// with Escaped, what escaped a run that is ending.
type Sweep struct {
	Name string
	// Previous holds the tokens of the runs to sweep (Lock.Previous): only
	// processes whose marker carries one of them are leftovers. Empty:
	// none is sought by its marker.
	Previous []string
	// Escaped, when set, is the marker value of the run that is ending,
	// in place of Previous: at the end of a run without a cgroup, what
	// carries it is no longer below reaper, since wait4 said nothing is.
	// It escaped the teardown: it entered another PID namespace (nsenter
	// into one another process of the same user holds: no privilege
	// needed), or was reparented outside reaper's tree (reaper could not
	// become a subreaper, ptrace games). Each is stopped as a leftover is,
	// with a warning that says how it escaped, and one of another user's,
	// which reaper does not signal, is named in a warning.
	Escaped string
	Self    int // reaper's pid: it and its ancestors are never swept
	// Stale are the cgroups earlier runs of the lock left (Lock.StaleLeaves:
	// only those whose record proves it).
	Stale []*cgroup.Leaf
	// Blind says /proc shows another PID namespace, whose pids are not
	// reaper's to signal: nothing is sought by its marker, and the stale
	// cgroups are killed whole (cgroup.kill) without a grace period.
	Blind bool
	// StopSignal, Grace and KillWait are the stop's: the stop signal to
	// all at once, one grace period, then SIGKILL, whose effect is awaited
	// KillWait at most.
	StopSignal      syscall.Signal
	Grace, KillWait time.Duration
	Log             *logs.Logger
	// Stop reports whether reaper was asked to stop meanwhile; the sweep
	// then ends at once. nil: never.
	Stop func() bool
	// Marked are more markers (instance.Marker) whose carriers are
	// leftovers, beside those of the Previous tokens.
	Marked [][]byte
	// Kind names a leftover in the log (default "leftover of an earlier
	// run").
	Kind string
}

// leftover is a process of the previous run.
type leftover struct {
	*handle.Handle
	cmdline string
	leaf    *cgroup.Leaf // the stale cgroup it was found in, or nil
	how     string       // how it left the tree of the run (Escaped)
}

// stopRequested calls Stop.
func (s *Sweep) stopRequested() bool { return s.Stop != nil && s.Stop() }

// fields are the log fields that name a process the sweep found.
func (s *Sweep) fields(pid int, cmdline, how string) []zapcore.Field {
	fields := []zapcore.Field{logs.String("instance", s.Name), logs.Int("pid", pid), logs.String("command", cmdline)}
	if how != "" {
		fields = append(fields, logs.String("how", how))
	}
	return fields
}

// Run sweeps: the processes in the stale cgroups and those carrying the
// previous run's marker. The policy is a stop's: the stop signal to all at
// once, one grace period, then SIGKILL (cgroup.kill for the cgroups), again
// until nothing is left. It reports whether it ran to its end: false when
// a stop request cut it short, or leftovers kept appearing, or a stale
// cgroup could not be removed, and some may remain. Each leftover's line
// is written once its signal was delivered; a signal the kernel refused
// (another user's process) is a warning that says so, and the sweep does
// not wait for that process.
func (s *Sweep) Run() bool {
	began := time.Now()
	seen := map[int]bool{}
	spared := ancestors(s.Self)
	signal := s.StopSignal
	// A few rounds: each finds what appeared since (a leftover that forked
	// while the previous round killed), and round one is the usual case.
	complete := false
	for round := 0; round < 5 && !s.stopRequested(); round++ {
		found := s.leftovers(seen, spared)
		if len(found) == 0 {
			complete = true
			break
		}
		var hs []*handle.Handle // those signalled: the ones to wait for
		for _, l := range found {
			if s.signal(l, signal, s.noun()) {
				if signal != syscall.SIGKILL && l.Stopped() {
					l.Signal(syscall.SIGCONT) // a stopped process acts on nothing until continued
				}
				hs = append(hs, l.Handle)
			}
		}
		if signal == syscall.SIGKILL || !handle.WaitAll(hs, began.Add(s.Grace), s.stopRequested) {
			if signal != syscall.SIGKILL {
				signal = syscall.SIGKILL // the grace period is over: for what is left, and what comes next
				s.kill(found)
			}
			handle.WaitAll(hs, time.Now().Add(s.KillWait), nil)
		}
		for _, l := range found {
			l.Close()
		}
	}
	removed := s.removeStale()
	return complete && removed && !s.stopRequested()
}

// signal sends sig to leftover l and reports whether it was delivered:
// then it logs msg, else, unless l is gone, a warning that l was not
// signalled, and why.
func (s *Sweep) signal(l leftover, sig syscall.Signal, msg string) bool {
	err := l.Signal(sig)
	if err == nil {
		s.Log.Warn(msg, append(s.fields(l.PID, l.cmdline, l.how), logs.Signal("signal", sig))...)
		return true
	}
	if !errors.Is(err, handle.ErrGone) {
		s.Log.Warn(s.noun()+" not signalled", append(s.fields(l.PID, l.cmdline, l.how), logs.Signal("signal", sig), logs.Err(err))...)
	}
	return false
}

// kill SIGKILLs what is left of found once the grace period is over: the
// stale cgroups whole (cgroup.kill, which reaches their members and what
// they fork), then each leftover outside them, or in a cgroup that could
// not be killed.
func (s *Sweep) kill(found []leftover) {
	killed := map[*cgroup.Leaf]bool{}
	for _, leaf := range s.Stale {
		killed[leaf] = leaf.Kill() == nil
	}
	for _, l := range found {
		switch {
		case l.Exited():
		case l.leaf != nil && killed[l.leaf]:
			s.Log.Warn("killed "+s.noun(), append(s.fields(l.PID, l.cmdline, l.how), logs.String("by", "cgroup.kill"))...)
		default:
			s.signal(l, syscall.SIGKILL, "killed "+s.noun())
		}
	}
}

// removeStale empties the stale cgroups and removes them, and reports
// whether it removed them all.
func (s *Sweep) removeStale() bool {
	removed := true
	for _, leaf := range s.Stale {
		if full, _ := leaf.Populated(); full {
			if leaf.Kill() == nil {
				s.Log.Warn("killed what was left in the cgroup of an earlier run", logs.String("instance", s.Name),
					logs.String("cgroup", leaf.Dir), logs.String("by", "cgroup.kill"))
			}
			if empty, err := leaf.WatchEmpty(); err == nil {
				select {
				case <-empty:
				case <-time.After(s.KillWait):
				}
			}
		}
		if err := leaf.Remove(); err != nil {
			s.Log.Warn("cannot remove the cgroup of an earlier run", logs.String("cgroup", leaf.Dir), logs.Err(err))
			removed = false
		}
	}
	return removed
}

// leftovers returns the leftovers not seen yet: members of the stale
// cgroup, and processes carrying the previous run's marker that another
// user could not have made so (see trusted). spared are never leftovers.
func (s *Sweep) leftovers(seen, spared map[int]bool) []leftover {
	if s.Blind {
		return nil
	}
	var found []leftover
	add := func(h *handle.Handle, leaf *cgroup.Leaf) {
		if seen[h.PID] {
			h.Close()
			return
		}
		seen[h.PID] = true
		l := leftover{Handle: h, cmdline: procfs.CommandLine(h.PID), leaf: leaf}
		if s.Escaped != "" {
			l.how = escapeRoute(h.PID, s.Self)
		}
		found = append(found, l)
	}
	for _, leaf := range s.Stale {
		pids, _ := leaf.Procs()
		for _, pid := range pids {
			if spared[pid] {
				continue
			}
			if h, err := leaf.Member(pid); err == nil {
				add(h, leaf)
			}
		}
	}
	if markers := s.Markers(); len(markers) > 0 {
		var since uint64
		if s.Escaped != "" {
			// What carries the run's marker was forked since the run
			// began: the older processes' environments need no reading
			// (reading one is the costly part of a search).
			self, _ := procfs.Stat(s.Self)
			since = self.Start
		}
		for _, h := range findMarked(markers, spared, s.Self, since, func(pid int) { s.untrusted(seen, pid) }) {
			add(h, nil)
		}
	}
	return found
}

// noun names what the sweep stops, in its warnings.
func (s *Sweep) noun() string {
	switch {
	case s.Kind != "":
		return s.Kind
	case s.Escaped != "":
		return "escapee of this run"
	}
	return "leftover of an earlier run"
}

// untrusted warns, once, of an escapee (Escaped) that is another user's:
// its environment cannot be believed, and reaper does not signal it.
func (s *Sweep) untrusted(seen map[int]bool, pid int) {
	if s.Escaped == "" || seen[pid] {
		return
	}
	seen[pid] = true
	s.Log.Warn("a process of another user carries this run's marker outside its tree: not signalled",
		s.fields(pid, procfs.CommandLine(pid), escapeRoute(pid, s.Self))...)
}

// escapeRoute says how pid, carrying the marker of the run of reaper self,
// left reaper's tree.
func escapeRoute(pid, self int) string {
	own, _ := os.Readlink(procfs.Path(self, "ns/pid"))
	if ns, err := os.Readlink(procfs.Path(pid, "ns/pid")); err == nil && ns != own {
		return "left reaper's tree: another PID namespace"
	}
	if p, err := procfs.Stat(pid); err == nil {
		return "left reaper's tree: reparented outside, to pid " + strconv.Itoa(p.PPID)
	}
	return "left reaper's tree"
}

// Markers returns the environment entries that leftovers carry: the
// Escaped one; or one for each of the Previous tokens, and Marked.
func (s *Sweep) Markers() [][]byte {
	if s.Escaped != "" {
		return [][]byte{Marker(s.Escaped)}
	}
	markers := append([][]byte(nil), s.Marked...)
	for _, t := range s.Previous {
		markers = append(markers, Marker(Value(s.Name, t)))
	}
	return markers
}

// findMarked returns handles on the processes whose environment carries
// one of markers (as its own or an outer run's, see Nest) and that
// another user could not have made so, spared, the descendants of self and
// (since not 0) the processes started before clock tick since aside; it
// calls untrusted with the pid of each marked process of another user. It
// looks in every namespace /proc shows: a marker's token is fresh for each
// run, so only that run's processes carry it, in whatever namespaces they
// entered (a PrivateTmp= unit, a container it started).
func findMarked(markers [][]byte, spared map[int]bool, self int, since uint64, untrusted func(pid int)) []*handle.Handle {
	pids, err := procfs.ListPIDs(procfs.Root)
	if err != nil {
		return nil
	}
	euid := os.Geteuid()
	var found []*handle.Handle
	for _, pid := range pids {
		if spared[pid] || since != 0 && startedBefore(pid, since) ||
			!procfs.HasEnvItem(pid, markers...) || procfs.Descends(pid, self) {
			continue
		}
		if !trusted(pid, euid) {
			untrusted(pid)
			continue
		}
		// pidfd first, the owner and the marker again after: the pid may
		// have been reused by a process that is no leftover.
		h, err := handle.Open(pid, func() error {
			if !trusted(pid, euid) || !procfs.HasEnvItem(pid, markers...) || procfs.Descends(pid, self) {
				return handle.ErrGone
			}
			return nil
		})
		if err == nil {
			found = append(found, h)
		}
	}
	return found
}

// startedBefore reports whether pid started before clock tick since; false
// when that cannot be told.
func startedBefore(pid int, since uint64) bool {
	p, err := procfs.Stat(pid)
	return err == nil && p.Start < since
}

// trusted reports whether the environment of pid can be believed by a
// reaper running as euid: a process of the same user, started by it (its
// real uid), and for root one whose every id is root's (a setuid program
// another user started with a marker in its environment is that user's).
func trusted(pid, euid int) bool {
	ids, err := procfs.UIDs(pid)
	if err != nil {
		return false
	}
	if euid != 0 {
		return ids[0] == euid
	}
	return ids == [4]int{}
}

// ancestors returns self and the chain of its parents: a sweep never
// signals the processes reaper runs below, whatever their environment.
func ancestors(self int) map[int]bool {
	chain := map[int]bool{self: true, 1: true}
	procfs.WalkUp(self, func(p procfs.Process) bool {
		chain[p.PPID] = true
		return true
	})
	return chain
}
