package instance

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestCheck(t *testing.T) {
	for _, ok := range []string{"gateway", "a.b-c_d@1", strings.Repeat("x", 64)} {
		if err := Check(ok); err != nil {
			t.Errorf("Check(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", "a/b", "a b", strings.Repeat("x", 65), "x\n"} {
		if err := Check(bad); err == nil {
			t.Errorf("Check(%q) accepted it", bad)
		}
	}
}

func TestCheckRefusesUnnamedRunNames(t *testing.T) {
	for _, bad := range []string{"run-123-abc", "run-", Unique()} {
		if err := Check(bad); err == nil {
			t.Errorf("Check(%q) accepted the name of an unnamed run", bad)
		}
	}
	if err := Check("runner"); err != nil {
		t.Errorf("Check(runner): %v", err)
	}
}

func TestParseLocks(t *testing.T) {
	data := []byte(`1: POSIX  ADVISORY  WRITE 99 00:2d:5678 0 EOF
2: -> FLOCK  ADVISORY  WRITE 4321 00:2d:5678 0 EOF
2: FLOCK  ADVISORY  WRITE 1234 00:2d:5678 0 EOF
3: FLOCK  ADVISORY  WRITE 77 103:02:42 0 EOF
4: OFDLCK ADVISORY  READ  -1 00:05:9 0 EOF
`)
	for _, tc := range []struct {
		major, minor uint32
		ino          uint64
		pid          int
		found        bool
		sameInode    []int
	}{
		{0, 0x2d, 5678, 1234, true, nil}, // the flock, not the POSIX lock nor the waiter before it
		{0x103, 2, 42, 77, true, nil},    // device numbers written with three digits
		// The same inode on another device may be another file: only a
		// candidate, for holder to check.
		{0, 0x2e, 42, 0, false, []int{77}},
		{0, 0x2d, 1, 0, false, nil},
		{0, 5, 9, 0, false, nil}, // an OFD lock is no flock
	} {
		pid, found, sameInode := parseLocks(data, tc.major, tc.minor, tc.ino)
		if pid != tc.pid || found != tc.found || !slices.Equal(sameInode, tc.sameInode) {
			t.Errorf("parseLocks(%x:%x:%d) = %d, %v, %v; want %d, %v, %v",
				tc.major, tc.minor, tc.ino, pid, found, sameInode, tc.pid, tc.found, tc.sameInode)
		}
	}
}

// TestLockFileTrust: the lock file is opened without following a link and
// without blocking, and must be a regular file of the user's own; its
// flock's holder is named by the kernel.
func TestLockFileTrust(t *testing.T) {
	dir := t.TempDir()
	if err := syscall.Mkfifo(dir+"/fifo.lock", 0o600); err != nil {
		t.Fatal(err)
	}
	if fd, err := openLockFile(dir, "fifo"); err == nil {
		unix.Close(fd)
		t.Error("a FIFO was taken for a lock file")
	}
	os.WriteFile(dir+"/target", nil, 0o600)
	os.Symlink(dir+"/target", dir+"/link.lock")
	if fd, err := openLockFile(dir, "link"); err == nil {
		unix.Close(fd)
		t.Error("a symbolic link was followed")
	}
	os.Symlink(dir, dir+"/linked-dir")
	if fd, err := openLockFile(dir+"/linked-dir", "x"); err == nil {
		unix.Close(fd)
		t.Error("a symbolic link to the directory was followed")
	}
	fd, err := openLockFile(dir, "ok")
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	if pid, held := holder(fd); !held || pid != os.Getpid() {
		t.Errorf("holder = %d, %v; want this process, %d", pid, held, os.Getpid())
	}
	// Another descriptor of the file, closed, releases nothing.
	other, err := openLockFile(dir, "ok")
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(other)
	other, _ = openLockFile(dir, "ok")
	defer unix.Close(other)
	if err := unix.Flock(other, unix.LOCK_EX|unix.LOCK_NB); err == nil {
		t.Error("closing another descriptor released the lock")
	}
}

// TestRecordCarriesTheTokens: a run's record names its token and, until
// its sweep ends, the tokens it has yet to sweep; a later run reads them
// all, and nothing that is not a token.
func TestRecordCarriesTheTokens(t *testing.T) {
	dir := t.TempDir()
	open := func(token string) *Lock {
		t.Helper()
		l := &Lock{Dir: dir, Name: "x", Token: token}
		var err error
		if l.fd, err = openLockFile(dir, "x"); err != nil {
			t.Fatal(err)
		}
		l.Previous = l.readRecord()
		if err := l.writeRecord(l.Previous); err != nil {
			t.Fatal(err)
		}
		return l
	}
	first := open("01")
	first.Release()
	second := open("02") // stopped in its sweep: it never calls Swept
	if !slices.Equal(second.Previous, []string{"01"}) {
		t.Errorf("second run sweeps %q, want [01]", second.Previous)
	}
	second.Release()
	third := open("03")
	if !slices.Equal(third.Previous, []string{"02", "01"}) {
		t.Errorf("third run sweeps %q, want [02 01]: the unswept token was lost", third.Previous)
	}
	if err := third.Swept(); err != nil {
		t.Fatal(err)
	}
	third.Release()
	fourth := open("04")
	if !slices.Equal(fourth.Previous, []string{"03"}) {
		t.Errorf("fourth run sweeps %q, want [03]", fourth.Previous)
	}
	fourth.Release()
	for i := 0; i < 3*maxUnswept; i++ { // runs that never finish a sweep
		open(fmt.Sprintf("%x", 0x100+i)).Release()
	}
	last := open("ff")
	defer last.Release()
	if len(last.Previous) != maxUnswept+1 || last.Previous[0] != fmt.Sprintf("%x", 0x100+3*maxUnswept-1) {
		t.Errorf("after many unswept runs the record holds %q, want the newest %d", last.Previous, maxUnswept+1)
	}
	os.WriteFile(dir+"/x.lock", []byte("pid 1\ntoken ../../etc\nunswept 12 34\n"), 0o600)
	if got := last.readRecord(); len(got) != 0 {
		t.Errorf("a token that is no hex string was read: %q", got)
	}
}

// TestHolds: a process holds the lock when one of its descriptors is open
// on the very file (same device and inode) and holds the flock; another
// descriptor of the file, whose flock is refused, holds nothing.
func TestHolds(t *testing.T) {
	dir := t.TempDir()
	other, err := openLockFile(dir, "x")
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(other)
	var st unix.Stat_t
	if err := unix.Fstat(other, &st); err != nil {
		t.Fatal(err)
	}
	if ok, err := holds(os.Getpid(), uint64(st.Dev), st.Ino); ok || err != nil {
		t.Errorf("holds before any flock = %v, %v; want false", ok, err)
	}
	fd, err := openLockFile(dir, "x")
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	if ok, err := holds(os.Getpid(), uint64(st.Dev), st.Ino); !ok || err != nil {
		t.Errorf("holds with the flock = %v, %v; want true", ok, err)
	}
	if ok, _ := holds(os.Getpid(), uint64(st.Dev)+1, st.Ino); ok {
		t.Error("the same inode number on another device was taken for the file")
	}
}

func TestFdinfoFlock(t *testing.T) {
	for _, tc := range []struct {
		info string
		want bool
	}{
		{"pos:\t0\nflags:\t0102002\nmnt_id:\t26\nino:\t42\nlock:\t1: FLOCK  ADVISORY  WRITE 1234 fe:00:42 0 EOF\n", true},
		{"pos:\t0\nflags:\t0102002\nmnt_id:\t26\nino:\t42\n", false},
		{"lock:\t1: POSIX  ADVISORY  WRITE 1234 fe:00:42 0 EOF\n", false}, // a record lock, not the flock
		{"lock:", false},
	} {
		if got := fdinfoFlock([]byte(tc.info)); got != tc.want {
			t.Errorf("fdinfoFlock(%q) = %v, want %v", tc.info, got, tc.want)
		}
	}
}

// TestParseLeafRecord: a leaf's record is another run's, maybe another
// user's: only a hexadecimal token counts, and the lock path that names
// the other run in a warning holds nothing but printable ASCII.
func TestParseLeafRecord(t *testing.T) {
	for _, tc := range []struct {
		record string
		want   maker
	}{
		{"token 0af3\nlock /run/reaper/x.lock 0:45:3\npid 17\n", maker{"0af3", "/run/reaper/x.lock 0:45:3", 17}},
		{"token ../../etc\nlock /a\x1b[2J\npid x\n", maker{}},
		{"", maker{}},
		{"token abc", maker{token: "abc"}},
	} {
		if got := parseLeafRecord([]byte(tc.record)); got != tc.want {
			t.Errorf("parseLeafRecord(%q) = %+v, want %+v", tc.record, got, tc.want)
		}
	}
	// A run's own leaf, when the instance's is taken, has a name that no
	// instance's leaf has.
	own := leafOf("web", "0af31234ff")
	if own != "reaper-instance-web+0af31234" || Check(strings.TrimPrefix(own, "reaper-instance-")) == nil {
		t.Errorf("leafOf = %q: want reaper-instance-web+0af31234, no instance's leaf name", own)
	}
}

func FuzzParseLocks(f *testing.F) {
	f.Add([]byte("2: FLOCK  ADVISORY  WRITE 1234 00:2d:5678 0 EOF\n"), uint64(5678))
	f.Add([]byte("2: FLOCK x y z w:w:w\n"), uint64(1))
	f.Fuzz(func(t *testing.T, data []byte, ino uint64) {
		if pid, _, _ := parseLocks(data, 0, 0x2d, ino); pid < 0 {
			t.Errorf("pid %d", pid)
		}
	})
}

func TestNest(t *testing.T) {
	for _, tc := range []struct{ own, inherited, want string }{
		{"a:1f", "", "a:1f"},
		{"run-12-abc", "b:2f,run-3-y", "run-12-abc,b:2f,run-3-y"},
		// What has no marker's form, or is there already, is left out.
		{"a:1f", "junk,web:zz,b:2f,,a:1f,b:2f,x y:1f,run-,run-1-X,../:1f", "a:1f,b:2f"},
		{"a:1f", "b:1,c:2,d:3,e:4,f:5,g:6,h:7,i:8,j:9", "a:1f,b:1,c:2,d:3,e:4,f:5,g:6,h:7"},
	} {
		if got := Nest(tc.own, tc.inherited); got != tc.want {
			t.Errorf("Nest(%q, %q) = %q, want %q", tc.own, tc.inherited, got, tc.want)
		}
	}
	if v := Value("web", "00ff"); !isMarker(v) || !isMarker(Unique()) {
		t.Errorf("%q or %q does not have a marker's form", v, Unique())
	}
}
