package instance

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/reaper-init/reaper/reaper/cgroup"
	"github.com/reaper-init/reaper/reaper/logs"
)

// Which run made a cgroup leaf.
//
// A named run's leaf is reaper-instance-NAME below reaper's own cgroup,
// but the lock that makes it the one live run of NAME lives in its user's
// lock directory: another user, or a mount namespace with a /run of its
// own, has another lock, and two live runs of one name can meet at one
// leaf. So each run records itself on its leaf before anything runs there
// (cgroup.Leaf.SetRecord: an attribute only root, or for an unprivileged
// run only the leaf's owner, can write), and a run sweeps a leaf only when
// that record names an earlier run of its own lock, which has ended, since
// this run holds the lock now. A leaf another run made is left alone, and
// COMMAND gets a leaf of its own.

// leafRecord is the record this run keeps on its leaf: its token, which
// proves it, and its lock and pid, which name it to a run that meets it.
//
//	token T
//	lock /run/reaper/NAME.lock 0:26:1234
//	pid N
func (l *Lock) leafRecord() []byte {
	var st unix.Stat_t
	unix.Fstat(l.fd, &st)
	return fmt.Appendf(nil, "token %s\nlock %s %d:%d:%d\npid %d\n", l.Token, lockPath(l.Dir, l.Name),
		unix.Major(uint64(st.Dev)), unix.Minor(uint64(st.Dev)), st.Ino, os.Getpid())
}

// maker is the run a leaf's record names. Another run wrote it: nothing
// in it is trusted but a token equal to one of ours.
type maker struct {
	token string
	lock  string // printable ASCII only, else ""
	pid   int
}

func parseLeafRecord(data []byte) maker {
	var m maker
	for _, line := range strings.Split(string(data), "\n") {
		key, v, _ := strings.Cut(line, " ")
		switch {
		case key == "token" && isHex(v):
			m.token = v
		case key == "lock" && printable(v):
			m.lock = v
		case key == "pid":
			m.pid, _ = strconv.Atoi(v)
		}
	}
	return m
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// ownership is what a run may do with a leaf it finds.
type ownership int

const (
	// earlier: an earlier run of this lock made it, and has ended.
	earlier ownership = iota
	// nobodys: no record, and no process in it (an older reaper's, or
	// one killed before it recorded itself): removable, never signalled.
	nobodys
	// others: made by a run this one cannot prove ended (another lock,
	// another user), or without a record and with processes in it.
	others
)

// judge tells whose leaf is, and describes its maker for a warning.
func (l *Lock) judge(leaf *cgroup.Leaf) (ownership, string) {
	if uid, err := leaf.Owner(); err != nil || uid != os.Geteuid() {
		return others, fmt.Sprintf("a run of user %d", uid)
	}
	m := parseLeafRecord(leaf.Record())
	switch {
	case m.token != "" && slices.Contains(l.Previous, m.token):
		return earlier, "an earlier run of this instance, not removed"
	case m.token != "":
		return others, fmt.Sprintf("a run under another lock (%s), pid %d in its PID namespace", m.lock, m.pid)
	}
	if full, err := leaf.Populated(); err == nil && !full {
		return nobodys, "no run: no record, no process"
	}
	return others, "a run that left no record, with processes in it"
}

// leafOf is the leaf of the run with token when its instance's leaf is
// another run's: a name that no instance's leaf has ('+' is in no name),
// and that the next run of the lock finds from the token.
func leafOf(name, token string) string {
	return LeafName(name) + "+" + token[:min(8, len(token))]
}

// StaleLeaves returns the leaves below the cgroup at parentDir
// (parentPath as /proc/PID/cgroup names it) that earlier runs of this lock
// made, for the sweep: the instance's leaf, or the leaves of the Previous
// tokens' own (see leafOf), when their record names one of Previous. A
// leaf without a record and without a process is removed (rmdir, which
// the kernel refuses while a process lives in it); any other leaf is left
// alone.
func (l *Lock) StaleLeaves(parentDir, parentPath string) []*cgroup.Leaf {
	names := []string{LeafName(l.Name)}
	for _, t := range l.Previous {
		names = append(names, leafOf(l.Name, t))
	}
	var stale []*cgroup.Leaf
	for _, name := range names {
		leaf, err := cgroup.Open(parentDir, parentPath, name)
		if err != nil {
			continue
		}
		switch own, _ := l.judge(leaf); own {
		case earlier:
			stale = append(stale, leaf)
		case nobodys:
			leaf.RemoveEmpty()
		default:
			leaf.Close()
		}
	}
	return stale
}

// NewLeaf makes the leaf COMMAND is born in, below the cgroup at
// parentDir, and records this run on it: the instance's leaf, or, when a
// leaf of that name is another run's, one of this run's own (leafOf),
// with a warning that names the other run.
func (l *Lock) NewLeaf(parentDir, parentPath string, log *logs.Logger) (*cgroup.Leaf, error) {
	name := LeafName(l.Name)
	for try := 0; try < 4; try++ {
		leaf, err := cgroup.Create(parentDir, parentPath, name)
		if errors.Is(err, fs.ErrExist) && name == LeafName(l.Name) {
			name = l.taken(parentDir, parentPath, name, log)
			continue
		}
		if err != nil {
			return nil, err
		}
		if err := leaf.SetRecord(l.leafRecord()); err != nil {
			log.Warn("cannot record this run on its cgroup: a later run removes it only once it is empty", logs.Err(err))
		}
		if leaf.Exists() {
			return leaf, nil
		}
		// Removed meanwhile by a run that found it without a record and
		// empty: nothing ran there yet.
		leaf.Close()
	}
	return nil, fmt.Errorf("cgroup %s: removed as soon as made, again and again", name)
}

// taken handles the leaf of the instance's name, found there when this run
// makes its own: removed when it is nobody's (and then its name is
// returned), else left alone, with a warning, and the name of this run's
// own leaf returned.
func (l *Lock) taken(parentDir, parentPath, name string, log *logs.Logger) string {
	leaf, err := cgroup.Open(parentDir, parentPath, name)
	if err != nil {
		return name // gone meanwhile
	}
	own, maker := l.judge(leaf)
	if own == nobodys && leaf.RemoveEmpty() {
		return name
	}
	leaf.Close()
	mine := leafOf(l.Name, l.Token)
	msg := "the instance's cgroup is another run's, which this run cannot prove ended (another lock directory, " +
		"mount namespace or user): left alone; COMMAND runs in a cgroup of its own"
	if own == earlier {
		msg = "the cgroup of an earlier run is still there: COMMAND runs in a cgroup of its own"
	}
	log.Warn(msg, logs.String("instance", l.Name), logs.String("cgroup", leaf.Dir), logs.String("made_by", maker),
		logs.String("own", mine))
	return mine
}
