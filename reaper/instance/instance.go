// Package instance names reaper's runs: the marker every process of a run
// inherits, the lock a named instance holds for its whole life, and the
// sweep of what an earlier run of the instance left behind.
//
// Trust: the lock lives in a directory only its user can write, opened
// without following links and without blocking; it is a flock, which no
// other descriptor's close can release; the holder's pid comes from the
// kernel (/proc/locks). Each run writes a fresh random token into its lock
// file and exports it in its marker, and the next run sweeps only
// processes that carry the previous run's token, never reaper's own
// ancestors, and never another user's processes (as root: unless they sit
// in the previous run's cgroup), and a cgroup only when the record the run
// kept on it names an earlier run of the same lock (leaf.go). --replace
// signals only a process that provably holds the lock now. Environment
// variables are input, not proof.
package instance

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Var is the variable reaper exports to COMMAND, its run's marker: for a
// named instance NAME:TOKEN, the token fresh for each run; without
// --instance, a value unique to the run (run-PID-TIME). Every process of
// the run inherits it, so that a later run can recognise the leftovers of
// an earlier one, even after reaper itself was SIGKILLed.
//
// A reaper started below another keeps the outer runs' markers after its
// own, separated by commas (see Nest): OWN,OUTER,..., so that the sweep of
// an outer instance still finds what the inner run started. The first
// item is the run's own marker; a value without a comma is the marker of
// a run that is nobody's nested one, as before nesting was kept.
const Var = "REAPER_INSTANCE"

// maxMarkers bounds the markers one value carries: a run's own and its
// outer runs'.
const maxMarkers = 8

// Nest returns the value of Var for a run whose own marker is own, started
// with inherited as Var's value (empty when it was not set): own first,
// then the markers of inherited that have a marker's form, each once, 8
// in all at most (the innermost runs').
func Nest(own, inherited string) string {
	out := []string{own}
	for item := range strings.SplitSeq(inherited, ",") {
		if len(out) < maxMarkers && isMarker(item) && !slices.Contains(out, item) {
			out = append(out, item)
		}
	}
	return strings.Join(out, ",")
}

// isMarker reports whether v has the form of a run's marker: NAME:TOKEN,
// the name valid and the token hexadecimal, or an unnamed run's
// run-PID-TIME.
func isMarker(v string) bool {
	if rest, ok := strings.CutPrefix(v, unnamedPrefix); ok {
		return rest != "" && strings.Trim(rest, "0123456789abcdefghijklmnopqrstuvwxyz-") == ""
	}
	name, token, ok := strings.Cut(v, ":")
	return ok && Check(name) == nil && token != "" && strings.Trim(token, "0123456789abcdef") == ""
}

// unnamedPrefix begins the values of runs without --instance; a name may
// not begin with it, or a named run could sweep a live unnamed one (and
// kill its cgroup).
const unnamedPrefix = "run-"

// Check validates an instance name. It names a cgroup and a lock file: 1 to
// 64 ASCII letters, digits and . _ @ -, not . or .., and not beginning with
// "run-", which unnamed runs use. (A loop, not a regexp: package regexp
// would cost every start-up its compilation and the binary 100 KiB.)
func Check(name string) error {
	ok := len(name) >= 1 && len(name) <= 64 && name != "." && name != ".."
	for i := 0; ok && i < len(name); i++ {
		c := name[i]
		ok = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("._@-", c) >= 0
	}
	if !ok {
		return fmt.Errorf("instance name %q: use 1 to 64 letters, digits and . _ @ -", name)
	}
	if strings.HasPrefix(name, unnamedPrefix) {
		return fmt.Errorf("instance name %q: names beginning with %q are those of runs without --instance", name, unnamedPrefix)
	}
	return nil
}

// Unique returns the marker value of a run without --instance: reaper's
// pid and the time, unique on the host.
func Unique() string {
	return unnamedPrefix + strconv.Itoa(os.Getpid()) + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
}

// Value is the marker's value for a run of instance name with token.
func Value(name, token string) string {
	return name + ":" + token
}

// Marker is the environment entry that marks a run's processes, for its
// marker value (see Value and Unique).
func Marker(value string) []byte {
	return []byte(Var + "=" + value)
}

// LeafName is the name of an instance's cgroup: a name distinctive enough
// that a group of that name below reaper's own is taken for an earlier
// run's, and swept.
func LeafName(name string) string {
	return "reaper-instance-" + name
}
