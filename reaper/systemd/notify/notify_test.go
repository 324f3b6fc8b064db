package notify

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"

	"github.com/reaper-init/reaper/reaper/logs"
	"github.com/reaper-init/reaper/reaper/token"
)

// wait bounds every wait of these tests.
const wait = 10 * time.Second

// TestMain doubles as a sender in another process: with NOTIFY_TEST_SEND
// set, the test binary sends NOTIFY_TEST_TEXT there and exits.
func TestMain(m *testing.M) {
	if addr := os.Getenv("NOTIFY_TEST_SEND"); addr != "" {
		if err := sendTo(addr, []byte(os.Getenv("NOTIFY_TEST_TEXT"))); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// sendTo sends one datagram with fds to a NOTIFY_SOCKET address, as
// sd_pid_notify_with_fds does.
func sendTo(addr string, msg []byte, fds ...int) error {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	return unix.Sendmsg(fd, msg, oob, &unix.SockaddrUnix{Name: addr}, 0)
}

func send(t *testing.T, r *Relay, msg string, fds ...int) {
	t.Helper()
	if err := sendTo(r.Address(), []byte(msg), fds...); err != nil {
		t.Fatalf("sending %q: %v", msg, err)
	}
}

// manager is a fake service manager's notification socket, bound as
// systemd binds its own: SO_PASSCRED, a path or an abstract name.
type manager struct {
	fd   int
	addr string
}

func newManager(t *testing.T, abstract bool) *manager {
	t.Helper()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
		t.Fatal(err)
	}
	addr := filepath.Join(t.TempDir(), "notify")
	if abstract {
		addr = fmt.Sprintf("@reaper-notify-test-%d-%s", os.Getpid(), token.New(8))
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: addr}); err != nil {
		t.Fatal(err)
	}
	return &manager{fd: fd, addr: addr}
}

// message is a datagram the manager got.
type message struct {
	text string
	fds  []int
	cred *unix.Ucred
}

// recv waits for the next datagram. The caller owns its fds.
func (m *manager) recv(t *testing.T) message {
	t.Helper()
	msg, ok := m.tryRecv(t, wait)
	if !ok {
		t.Fatalf("the manager got nothing in %v", wait)
	}
	return msg
}

func (m *manager) tryRecv(t *testing.T, d time.Duration) (message, bool) {
	t.Helper()
	pfd := []unix.PollFd{{Fd: int32(m.fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(pfd, int(d.Milliseconds()))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return message{}, false
		}
		break
	}
	buf, oob := make([]byte, 64<<10), make([]byte, 4096)
	n, oobn, flags, _, err := unix.Recvmsg(m.fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
		t.Fatalf("the manager's buffers are too small: flags %#x", flags)
	}
	fds, cred := parseControl(oob[:oobn])
	t.Cleanup(func() { closeAll(fds) })
	return message{text: string(buf[:n]), fds: fds, cred: cred}, true
}

// drain reads what the manager has queued, without waiting.
func (m *manager) drain(t *testing.T) []string {
	t.Helper()
	var got []string
	for {
		msg, ok := m.tryRecv(t, 0)
		if !ok {
			return got
		}
		got = append(got, msg.text)
	}
}

// testLogger records the relay's log: reaper's logger, writing JSON lines.
type testLogger struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *testLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// logger is the *logs.Logger that writes to l, at debug level.
func (l *testLogger) logger() *logs.Logger {
	log, err := logs.New(l, logs.JSON, 2)
	if err != nil {
		panic(err)
	}
	return log
}

func (l *testLogger) count(level zapcore.Level, substr string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range strings.Split(l.buf.String(), "\n") {
		var e struct{ Level, Msg string }
		if json.Unmarshal([]byte(line), &e) == nil && e.Level == level.String() && strings.Contains(e.Msg, substr) {
			n++
		}
	}
	return n
}

// relay opens a relay to upstream and serves it until the test ends;
// before, if given, changes it before Serve starts.
func relay(t *testing.T, upstream string, accept func(unix.Ucred) bool, before func(*Relay)) (*Relay, *testLogger) {
	t.Helper()
	log := &testLogger{}
	r, err := Open(upstream, accept, log.logger())
	if err != nil {
		t.Fatal(err)
	}
	if before != nil {
		before(r)
	}
	served := make(chan error, 1)
	go func() { served <- r.Serve() }()
	t.Cleanup(func() {
		r.Close()
		expectServeEnded(t, served)
	})
	return r, log
}

// expectServeEnded checks that Serve, run by the relay's test, returned
// ErrClosed.
func expectServeEnded(t *testing.T, served <-chan error) {
	t.Helper()
	select {
	case err := <-served:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("Serve returned %v, want ErrClosed", err)
		}
	case <-time.After(wait):
		t.Errorf("Serve still runs after Close")
	}
}

func acceptAll(unix.Ucred) bool { return true }

// sentinel follows a datagram that must be dropped: the relay handles
// datagrams in order, so if the manager's next datagram is the sentinel,
// the one before was not relayed.
const sentinel = "STATUS=sentinel"

func TestManagerAddr(t *testing.T) {
	for _, tc := range []struct {
		value string
		ok    bool
	}{
		{"/run/systemd/notify", true},
		{"/run/user/1000/systemd/notify", true},
		{"@/org/freedesktop/systemd1/notify/1", true},
		{"@" + strings.Repeat("a", 107), true}, // an abstract name needs no NUL
		{"/" + strings.Repeat("a", 107), false},
		{"@" + strings.Repeat("a", 108), false},
		{"", false},
		{"@", false},
		{"run/systemd/notify", false},
		{"vsock:2:1234", false},
		{"vsock-stream:2:1234", false},
	} {
		_, err := managerAddr(tc.value)
		if tc.ok && err != nil {
			t.Errorf("%q: %v", tc.value, err)
		}
		if !tc.ok && !errors.Is(err, ErrUnsupportedAddress) {
			t.Errorf("%q: %v, want ErrUnsupportedAddress", tc.value, err)
		}
	}
}

func TestOpenErrors(t *testing.T) {
	if _, err := Open("vsock:2:1234", acceptAll, nil); !errors.Is(err, ErrUnsupportedAddress) {
		t.Errorf("vsock: %v, want ErrUnsupportedAddress", err)
	}
	if _, err := Open(filepath.Join(t.TempDir(), "none"), acceptAll, nil); !errors.Is(err, unix.ENOENT) {
		t.Errorf("a path without a socket: %v, want ENOENT", err)
	}
	if _, err := Open(newManager(t, false).addr, nil, nil); err == nil {
		t.Errorf("a nil accept: no error")
	}
}

func TestFilter(t *testing.T) {
	for _, tc := range []struct {
		in, out string
		removed string // the keys, comma-separated
		pidfd   bool
	}{
		{"READY=1", "READY=1", "", false},
		{"READY=1\nSTATUS=MAINPID=7 is not a line of its own", "READY=1\nSTATUS=MAINPID=7 is not a line of its own", "", false},
		{"MAINPID=42\nREADY=1", "READY=1", "MAINPID", false},
		{"READY=1\nMAINPID=42\nSTATUS=up\n", "READY=1\nSTATUS=up", "MAINPID", false},
		{"MAINPID=42", "", "MAINPID", false},
		{"MAINPIDFD=1\nREADY=1", "READY=1", "MAINPIDFD", true},
		{"MAINPIDFDID=1234\nMAINPID=42\nREADY=1", "READY=1", "MAINPIDFDID,MAINPID", false},
		{"MAINPIDX=1\nREADY=1", "MAINPIDX=1\nREADY=1", "", false},
		// systemd splits at '\r' too, and keeps what follows.
		{"READY=1\rMAINPID=4242", "READY=1", "MAINPID", false},
		{"MAINPID=4244\rREADY=1", "READY=1", "MAINPID", false},
		{"STATUS=x\r\n\rMAINPID=1\r\rWATCHDOG=1", "STATUS=x\nWATCHDOG=1", "MAINPID", false},
		{"READY=1\nNOTIFYACCESS=all", "READY=1", "NOTIFYACCESS", false},
		// The text ends at the first NUL.
		{"READY=1\x00MAINPID=1", "READY=1", "", false},
		{"READY=1\x00", "READY=1", "", false},
		{"\x00READY=1", "", "", false},
		// A backslash takes the next byte: systemd reads MAINPID=1 here...
		{"READY=1\n\\MAINPID=1", "READY=1", "MAINPID", false},
		{"MAIN\\PID=1\nREADY=1", "READY=1", "MAINPID", false},
		// ...and an escaped line break, which systemd before 247 split.
		{"READY=1\\\nMAINPID=1", "", "line break", false},
		{"STATUS=a\\\rb\nREADY=1", "READY=1", "line break", false},
		// Backslashes of what is kept are kept, as systemd reads them.
		{"STATUS=C:\\\\x\nMAINPID=1", "STATUS=C:\\\\x", "MAINPID", false},
		{"STATUS=C:\\x\nMAINPID=1", "STATUS=C:x", "MAINPID", false},
		{"STATUS=C:\\x", "STATUS=C:\\x", "", false},
	} {
		f := filter([]byte(tc.in))
		if string(f.msg) != tc.out || strings.Join(f.removed, ",") != tc.removed || f.pidfd != tc.pidfd || f.unreadable {
			t.Errorf("%q: %q, removed %q, pidfd %v, unreadable %v; want %q, %q, %v", tc.in, f.msg, f.removed, f.pidfd, f.unreadable,
				tc.out, tc.removed, tc.pidfd)
		}
	}
	for _, in := range []string{"READY=1\\", "MAINPID=1\nREADY=1\\"} {
		if f := filter([]byte(in)); !f.unreadable || len(f.msg) != 0 {
			t.Errorf("%q: %+v, want unreadable (systemd ignores it whole)", in, f)
		}
	}
}

// systemdReads is a model of how systemd 247 and later read a
// notification, written after its C (manager_dispatch_notify_fd,
// strv_split_newlines, extract_first_word with separators "\n\r" and no
// flags) rather than after the relay's code: nil and false when it would
// ignore the datagram.
func systemdReads(buf []byte) ([]string, bool) {
	if i := bytes.IndexByte(buf, 0); i >= 0 {
		buf = buf[:i] // 252 ignores it instead: then nothing is read at all
	}
	at := func(p int) byte { // C strings end in NUL
		if p < len(buf) {
			return buf[p]
		}
		return 0
	}
	isSep := func(c byte) bool { return c == '\n' || c == '\r' }
	var tags []string
	p := 0
	for {
		// Skip separators; the end of the string: no more words.
		for isSep(at(p)) {
			p++
		}
		if at(p) == 0 {
			return tags, true
		}
		var s []byte
		backslash := false
	word:
		for ; ; p++ {
			c := at(p)
			switch {
			case backslash:
				if c == 0 {
					return nil, false // -EINVAL: systemd logs and drops the message
				}
				s = append(s, c)
				backslash = false
			case c == 0:
				break word
			case c == '\\':
				backslash = true
			case isSep(c):
				break word
			default:
				s = append(s, c)
			}
		}
		tags = append(tags, string(s))
	}
}

// oldSystemdReads is how systemd before 247 read one: split at every '\n'
// and '\r', no escapes.
func oldSystemdReads(buf []byte) []string {
	if i := bytes.IndexByte(buf, 0); i >= 0 {
		buf = buf[:i]
	}
	return strings.FieldsFunc(string(buf), func(r rune) bool { return r == '\n' || r == '\r' })
}

// movesTrust reports whether systemd would read tag as an assignment moving
// its trust: the main pid, or who may notify.
func movesTrust(tag string) bool {
	for _, key := range []string{"MAINPID=", "MAINPIDFD=", "MAINPIDFDID=", "NOTIFYACCESS="} {
		if strings.HasPrefix(tag, key) {
			return true
		}
	}
	return false
}

func FuzzFilter(f *testing.F) {
	for _, s := range []string{"READY=1", "READY=1\rMAINPID=4242", "MAINPID=4244\rREADY=1", "READY=1\x00MAINPID=1",
		"NOTIFYACCESS=all\nREADY=1", "\\MAINPID=1", "READY=1\\\nMAINPID=1", "STATUS=a\\\\b\n\n", "X\\", "\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		got := filter(in)
		tags, ok := systemdReads(in)
		if !ok {
			if !got.unreadable || len(got.msg) != 0 {
				t.Fatalf("%q: systemd ignores it, the relay sends %q", in, got.msg)
			}
			return
		}
		if got.unreadable {
			t.Fatalf("%q: systemd reads %q, the relay calls it unreadable", in, tags)
		}
		out, ok := systemdReads(got.msg)
		if !ok {
			t.Fatalf("%q: the relay sends %q, which systemd ignores", in, got.msg)
		}
		var want []string
		for _, tag := range tags {
			if !movesTrust(tag) && !strings.ContainsAny(tag, "\n\r") {
				want = append(want, tag)
			}
		}
		if !slices.Equal(out, want) {
			t.Fatalf("%q: systemd reads %q from the relay's %q, want %q", in, out, got.msg, want)
		}
		for _, tag := range oldSystemdReads(got.msg) {
			if movesTrust(tag) {
				t.Fatalf("%q: systemd before 247 reads %q from the relay's %q", in, tag, got.msg)
			}
		}
		if bytes.IndexByte(got.msg, 0) >= 0 {
			t.Fatalf("%q: the relay sends a NUL: %q", in, got.msg)
		}
		if len(got.removed) == 0 && bytes.IndexByte(in, 0) < 0 && !bytes.Equal(got.msg, in) {
			t.Fatalf("%q: nothing removed, yet the relay sends %q", in, got.msg)
		}
	})
}

func TestRelaysUnchanged(t *testing.T) {
	messages := []struct{ in, out string }{
		{"READY=1", "READY=1"},
		{"READY=1\nSTATUS=Serving 3 clients", "READY=1\nSTATUS=Serving 3 clients"},
		{"RELOADING=1\nMONOTONIC_USEC=123456789", "RELOADING=1\nMONOTONIC_USEC=123456789"},
		{"STOPPING=1", "STOPPING=1"},
		{"WATCHDOG=1", "WATCHDOG=1"},
		{"WATCHDOG=trigger", "WATCHDOG=trigger"},
		{"WATCHDOG_USEC=20000000", "WATCHDOG_USEC=20000000"},
		{"EXTEND_TIMEOUT_USEC=5000000", "EXTEND_TIMEOUT_USEC=5000000"},
		{"ERRNO=2", "ERRNO=2"},
		{"X_UNKNOWN=\xff bytes\n\n", "X_UNKNOWN=\xff bytes\n\n"},
		{"X_UNKNOWN=\x00\xff bytes\n\n", "X_UNKNOWN="}, // the text ends at the NUL
		{"MAINPID=1\nREADY=1", "READY=1"},
		{"READY=1\nMAINPID=1\n", "READY=1"},
		{"READY=1\rMAINPID=1", "READY=1"},
		{"MAINPID=1\rREADY=1", "READY=1"},
		{"NOTIFYACCESS=all\nREADY=1", "READY=1"},
		{"READY=1\\", ""}, // systemd would ignore it: dropped
		{"MAINPID=1", ""}, // nothing left: dropped
		{"MAINPID=1\n\n", ""},
		{strings.Repeat("S", maxDatagram), strings.Repeat("S", maxDatagram)},
		{strings.Repeat("S", maxDatagram+1), ""}, // too long: dropped
		{strings.Repeat("S", 60000), ""},
	}
	for _, abstract := range []bool{false, true} {
		t.Run(fmt.Sprintf("abstract=%v", abstract), func(t *testing.T) {
			m := newManager(t, abstract)
			r, log := relay(t, m.addr, acceptAll, nil)
			if !strings.HasPrefix(r.Address(), fmt.Sprintf("@reaper-notify-%d-", os.Getpid())) {
				t.Errorf("Address() = %q", r.Address())
			}
			var want Stats
			for _, tc := range messages {
				send(t, r, tc.in)
				send(t, r, sentinel)
				want.Relayed++
				expect := []string{sentinel}
				if tc.out != "" {
					expect = []string{tc.out, sentinel}
					want.Relayed++
				} else {
					want.Dropped++
				}
				for _, w := range expect {
					got := m.recv(t)
					if got.text != w {
						t.Errorf("sent %.40q: the manager got %.40q, want %.40q", tc.in, got.text, w)
					}
					// The manager sees the relay's credentials, never the
					// sender's.
					if got.cred == nil || int(got.cred.Pid) != os.Getpid() {
						t.Errorf("sent %.40q: the manager got credentials %+v, want pid %d", tc.in, got.cred, os.Getpid())
					}
				}
			}
			expectStats(t, r, want)
			if n := log.count(zapcore.InfoLevel, "MAINPID= or NOTIFYACCESS= removed"); n != 1 {
				t.Errorf("%d info lines for MAINPID=, want 1 (the first)", n)
			}
			if n := log.count(zapcore.WarnLevel, "ends in a backslash"); n != 1 {
				t.Errorf("%d warnings for a datagram systemd would ignore, want 1", n)
			}
			if n := log.count(zapcore.WarnLevel, "longer than"); n != 2 {
				t.Errorf("%d warnings for too long datagrams, want 2", n)
			}
		})
	}
}

// pipe returns a pipe whose read end sees EOF only once every copy of the
// write end is closed.
func pipe(t *testing.T) (r *os.File, w int) {
	t.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	r = os.NewFile(uintptr(p[0]), "pipe")
	t.Cleanup(func() { r.Close() })
	return r, p[1]
}

// expectEOF checks that every copy of the pipe's write end is closed: its
// read end sees EOF after want.
func expectEOF(t *testing.T, r *os.File, want string) {
	t.Helper()
	done := make(chan []byte, 1)
	go func() {
		data, _ := readAll(r)
		done <- data
	}()
	select {
	case data := <-done:
		if string(data) != want {
			t.Errorf("the pipe carried %q, want %q", data, want)
		}
	case <-time.After(wait):
		r.Close()
		t.Errorf("the pipe's write end is still open somewhere (the relay's copy?) after %v", wait)
	}
}

func readAll(r *os.File) ([]byte, error) {
	var out []byte
	buf := make([]byte, 512)
	for {
		n, err := r.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			return out, err
		}
	}
}

func TestRelaysDescriptors(t *testing.T) {
	m := newManager(t, false)
	r, _ := relay(t, m.addr, acceptAll, nil)

	// FDSTORE=1: the manager gets a working descriptor, and once it closes
	// its copy nothing else holds the pipe (sd_notify_barrier relies on it).
	pr, pw := pipe(t)
	pr2, pw2 := pipe(t)
	send(t, r, "FDSTORE=1\nFDNAME=pipes", pw, pw2)
	unix.Close(pw)
	unix.Close(pw2)
	got := m.recv(t)
	if got.text != "FDSTORE=1\nFDNAME=pipes" || len(got.fds) != 2 {
		t.Fatalf("the manager got %q with %d fds, want FDSTORE=1 with 2", got.text, len(got.fds))
	}
	for i, fd := range got.fds {
		if _, err := unix.Write(fd, []byte("through the manager's copy")); err != nil {
			t.Errorf("writing to the relayed fd %d: %v", i, err)
		}
		unix.Close(fd)
	}
	got.fds = nil
	expectEOF(t, pr, "through the manager's copy")
	expectEOF(t, pr2, "through the manager's copy")

	// MAINPIDFD=1 comes with the pidfd: removed, the descriptor goes too.
	pr, pw = pipe(t)
	send(t, r, "MAINPIDFD=1\nREADY=1", pw)
	unix.Close(pw)
	if got := m.recv(t); got.text != "READY=1" || len(got.fds) != 0 {
		t.Errorf("the manager got %q with %d fds, want READY=1 with none", got.text, len(got.fds))
	}
	expectEOF(t, pr, "")
}

func TestRefusedSenders(t *testing.T) {
	m := newManager(t, true)
	seen, verdicts := make(chan unix.Ucred), make(chan bool)
	r, log := relay(t, m.addr, func(c unix.Ucred) bool {
		seen <- c
		return <-verdicts
	}, nil)
	decide := func(accept bool) {
		t.Helper()
		select {
		case c := <-seen:
			uid, gid := uint32(os.Getuid()), uint32(os.Getgid())
			if int(c.Pid) != os.Getpid() || c.Uid != uid || c.Gid != gid {
				t.Errorf("accept saw %+v, want the sender's pid %d, uid %d, gid %d", c, os.Getpid(), uid, gid)
			}
		case <-time.After(wait):
			t.Fatal("accept was not asked")
		}
		verdicts <- accept
	}

	// Refused, with a descriptor: not relayed, and the relay's copy closed.
	pr, pw := pipe(t)
	send(t, r, "READY=1", pw)
	unix.Close(pw)
	decide(false)
	send(t, r, sentinel)
	decide(true)
	if got := m.recv(t); got.text != sentinel {
		t.Errorf("the manager got %q from a refused sender, want the sentinel next", got.text)
	}
	expectEOF(t, pr, "")
	expectStats(t, r, Stats{Refused: 1, Relayed: 1})
	if n := log.count(zapcore.DebugLevel, "refused"); n != 1 {
		t.Errorf("%d debug lines for the refused datagram, want 1", n)
	}
}

func TestSenderCredentialsReachAccept(t *testing.T) {
	m := newManager(t, false)
	pids := make(chan int32, 4)
	r, _ := relay(t, m.addr, func(c unix.Ucred) bool {
		pids <- c.Pid
		return c.Pid != int32(os.Getpid())
	}, nil)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	child := exec.Command(self)
	child.Env = append(os.Environ(), "NOTIFY_TEST_SEND="+r.Address(), "NOTIFY_TEST_TEXT=READY=1\nSTATUS=from the child")
	if out, err := child.CombinedOutput(); err != nil {
		t.Fatalf("the sending child: %v\n%s", err, out)
	}
	got := m.recv(t)
	if got.text != "READY=1\nSTATUS=from the child" {
		t.Errorf("the manager got %q", got.text)
	}
	if got.cred == nil || int(got.cred.Pid) != os.Getpid() {
		t.Errorf("the manager saw credentials %+v, want the relay's pid %d", got.cred, os.Getpid())
	}
	if pid := <-pids; int(pid) != child.Process.Pid {
		t.Errorf("accept saw pid %d, want the child's %d", pid, child.Process.Pid)
	}
	send(t, r, "READY=1") // from the test: refused
	send(t, r, sentinel)
	if pid := <-pids; int(pid) != os.Getpid() {
		t.Errorf("accept saw pid %d, want the test's %d", pid, os.Getpid())
	}
	<-pids // the sentinel
	expectStats(t, r, Stats{Refused: 2, Relayed: 1})
}

func TestTruncatedControlDataIsDropped(t *testing.T) {
	m := newManager(t, false)
	// Room for the credentials and two descriptors: three do not fit.
	r, log := relay(t, m.addr, acceptAll, func(r *Relay) {
		r.oob = make([]byte, unix.CmsgSpace(unix.SizeofUcred)+unix.CmsgSpace(2*4))
	})
	var readers []*os.File
	var writers []int
	for range 3 {
		pr, pw := pipe(t)
		readers, writers = append(readers, pr), append(writers, pw)
	}
	send(t, r, "FDSTORE=1", writers...)
	closeAll(writers)
	send(t, r, sentinel)
	if got := m.recv(t); got.text != sentinel {
		t.Errorf("the manager got %q with %d fds, want the sentinel next", got.text, len(got.fds))
	}
	for _, pr := range readers {
		expectEOF(t, pr, "")
	}
	if n := log.count(zapcore.WarnLevel, "control data"); n != 1 {
		t.Errorf("%d warnings for truncated control data, want 1", n)
	}
}

// expectStats waits until the relay's counts are want: the relay counts a
// datagram once sendmsg has returned, maybe after the manager got it.
func expectStats(t *testing.T, r *Relay, want Stats) {
	t.Helper()
	end := time.Now().Add(wait)
	for r.Stats() != want && time.Now().Before(end) {
		time.Sleep(time.Millisecond)
	}
	if got := r.Stats(); got != want {
		t.Errorf("Stats() = %+v, want %+v", got, want)
	}
}

// fill fills the manager's queue from a socket of the test's own.
func fill(t *testing.T, m *manager) int {
	t.Helper()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	for n := 0; ; n++ {
		err := unix.Sendto(fd, []byte("X_FILLER=1"), 0, &unix.SockaddrUnix{Name: m.addr})
		if errors.Is(err, unix.EAGAIN) {
			return n
		}
		if err != nil {
			t.Fatal(err)
		}
		if n > 100000 {
			t.Fatal("the manager's queue does not fill")
		}
	}
}

func TestFullManagerQueue(t *testing.T) {
	t.Run("drops after the wait", func(t *testing.T) {
		m := newManager(t, false)
		r, log := relay(t, m.addr, acceptAll, func(r *Relay) { r.sendWait = 200 * time.Millisecond })
		n := fill(t, m)
		send(t, r, "READY=1")
		expectStats(t, r, Stats{Dropped: 1})
		if got := m.drain(t); len(got) != n {
			t.Errorf("the manager got %d datagrams, want the %d fillers", len(got), n)
		}
		send(t, r, sentinel)
		if got := m.recv(t); got.text != sentinel {
			t.Errorf("the relay's next datagram: %q, want the sentinel", got.text)
		}
		if n := log.count(zapcore.WarnLevel, "not relayed"); n != 1 {
			t.Errorf("%d warnings, want 1", n)
		}
	})
	t.Run("waits for room", func(t *testing.T) {
		m := newManager(t, true)
		r, _ := relay(t, m.addr, acceptAll, nil)
		n := fill(t, m)
		send(t, r, "READY=1")
		time.Sleep(100 * time.Millisecond) // the relay is waiting now
		if s := r.Stats(); s.Relayed != 0 {
			t.Fatalf("Stats() = %+v: relayed into a full queue", s)
		}
		var got []string
		for range n + 1 {
			got = append(got, m.recv(t).text)
		}
		if got[n] != "READY=1" {
			t.Errorf("the manager got %q, want %d fillers then READY=1", got, n)
		}
		expectStats(t, r, Stats{Relayed: 1})
	})
}

// openFDs lists the process's open descriptors.
func openFDs(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var fds []string
	for _, e := range entries {
		target, _ := os.Readlink("/proc/self/fd/" + e.Name())
		fds = append(fds, e.Name()+" -> "+target)
	}
	return fds
}

func TestCloseEndsServeAndLeaksNothing(t *testing.T) {
	m := newManager(t, false)
	warm, warmW, err := os.Pipe() // the runtime's poller opens its own descriptors once
	if err != nil {
		t.Fatal(err)
	}
	warm.SetReadDeadline(time.Now())
	warm.Close()
	warmW.Close()
	before := openFDs(t)

	r, err := Open(m.addr, acceptAll, nil)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- r.Serve() }()
	pr, pw := pipe(t)
	send(t, r, "FDSTORE=1", pw)
	unix.Close(pw)
	got := m.recv(t)
	closeAll(got.fds)
	if err := r.Serve(); err == nil || errors.Is(err, ErrClosed) {
		t.Errorf("a second Serve: %v, want an error", err)
	}
	r.Close()
	expectServeEnded(t, served)
	r.Close() // again: nothing happens
	expectEOF(t, pr, "")
	pr.Close()
	if after := openFDs(t); len(after) != len(before) {
		t.Errorf("open descriptors before Open:\n%s\nafter Close:\n%s", strings.Join(before, "\n"), strings.Join(after, "\n"))
	}

	// Close without Serve returns at once.
	r, err = Open(m.addr, acceptAll, nil)
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	go func() { r.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(wait):
		t.Fatal("Close without Serve hangs")
	}
	if err := r.Serve(); !errors.Is(err, ErrClosed) {
		t.Errorf("Serve after Close: %v, want ErrClosed", err)
	}
	if after := openFDs(t); len(after) != len(before) {
		t.Errorf("open descriptors before Open:\n%s\nafter Close:\n%s", strings.Join(before, "\n"), strings.Join(after, "\n"))
	}
}

func TestDescriptorsAreCloseOnExec(t *testing.T) {
	m := newManager(t, false)
	r, _ := relay(t, m.addr, acceptAll, nil)
	for _, s := range []*socket{r.in, r.out} {
		var flags int
		var err error
		s.raw.Control(func(fd uintptr) { flags, err = unix.FcntlInt(fd, unix.F_GETFD, 0) })
		if err != nil || flags&unix.FD_CLOEXEC == 0 {
			t.Errorf("%s: F_GETFD %#x, %v: want FD_CLOEXEC", s.file.Name(), flags, err)
		}
	}
}
