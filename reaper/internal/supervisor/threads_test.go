package supervisor

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/reaper-init/reaper/reaper/cgroup"
)

func TestSparesFor(t *testing.T) {
	for room, want := range map[int]int{-3: 0, 0: 0, 5: 0, 6: 1, 12: 4, 20: 8, 1000: 8} {
		if got := sparesFor(room); got != want {
			t.Errorf("sparesFor(%d) = %d, want %d", room, got, want)
		}
	}
}

// TestPlannedSpares: spare threads where a pids.max bounds reaper's group
// or an ancestor, sized to its room; none where nothing bounds it (this
// test runs as root, whom RLIMIT_NPROC does not bound, or skips).
func TestPlannedSpares(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("REAPER_REQUIRE_ALL") == "1" {
			t.Fatal("needs root (RLIMIT_NPROC may bound another user), and REAPER_REQUIRE_ALL=1 forbids skipping")
		}
		t.Skip("RLIMIT_NPROC may bound a user other than root")
	}
	root := t.TempDir()
	group := filepath.Join(root, "a", "b")
	if err := os.MkdirAll(group, 0o755); err != nil {
		t.Fatal(err)
	}
	files := cgroup.Files{
		Mountinfo: []byte("41 31 0:38 / " + root + " rw - cgroup2 cgroup2 rw\n"),
		Own:       []byte("0::/a/b\n"),
	}
	for _, tc := range []struct {
		max, current string
		spares, room int
	}{
		{"max", "10", 0, -1},
		{"100", "10", 8, 90},
		{"22", "10", 4, 12},
	} {
		os.WriteFile(filepath.Join(root, "a", "pids.max"), []byte(tc.max+"\n"), 0o644)
		os.WriteFile(filepath.Join(root, "a", "pids.current"), []byte(tc.current+"\n"), 0o644)
		if n, room := plannedSpares(files); n != tc.spares || room != tc.room {
			t.Errorf("pids.max %s, current %s above reaper's group: %d spares, room %d; want %d, %d", tc.max, tc.current, n, room, tc.spares, tc.room)
		}
	}
}
