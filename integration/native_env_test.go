package integration

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// What reaper changes in COMMAND's environment for systemd, outside a
// real systemd (TestSystemdNative runs the same in one): LISTEN_PID and
// WATCHDOG_PID name COMMAND when they named reaper, and NOTIFY_SOCKET names
// reaper's relay.

func TestPidVariablesNameCommand(t *testing.T) {
	// The caller's shell sets the variables to its own pid, then becomes
	// reaper (exec keeps the pid), as systemd sets them to the main pid.
	// COMMAND prints its pid, what it got, and whether fd 3 (the socket
	// systemd would pass) is open in it.
	const command = `echo "$$ $LISTEN_PID $WATCHDOG_PID $LISTEN_FDS $LISTEN_FDNAMES ${REAPER_EXEC_WITH_PID-unset}"; readlink /proc/$$/fd/3`
	for _, tc := range []struct {
		name, vars string
		want       func(pid string) string
	}{
		{"naming reaper", `LISTEN_PID=$$ WATCHDOG_PID=$$`, func(pid string) string { return pid + " " + pid + " " + pid }},
		{"naming another process", `LISTEN_PID=1 WATCHDOG_PID=1`, func(pid string) string { return pid + " 1 1" }},
		// A stray trampoline variable (its parent is no reaper) is ignored,
		// and removed.
		{"stray trampoline variable", `LISTEN_PID=$$ WATCHDOG_PID=$$ REAPER_EXEC_WITH_PID=$PPID:LISTEN_PID:/bin/false`,
			func(pid string) string { return pid + " " + pid + " " + pid }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			script := fmt.Sprintf(`exec 3</dev/null; %s LISTEN_FDS=1 LISTEN_FDNAMES=web WATCHDOG_USEC=1000000 exec "$REAPER" sh -c '%s'`, tc.vars, command)
			cmd := exec.CommandContext(ctx, "sh", "-c", script)
			cmd.Env = append(os.Environ(), "REAPER="+bin().reaper)
			out, err := cmd.CombinedOutput()
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			if err != nil || len(lines) != 2 {
				t.Fatalf("%v: %s", err, out)
			}
			fields := strings.Fields(lines[0])
			if len(fields) != 6 {
				t.Fatalf("COMMAND printed %q", lines[0])
			}
			pid := fields[0]
			want := tc.want(pid) + " 1 web unset"
			if lines[0] != want {
				t.Errorf("COMMAND (pid, LISTEN_PID, WATCHDOG_PID, LISTEN_FDS, LISTEN_FDNAMES, REAPER_EXEC_WITH_PID) = %q, want %q", lines[0], want)
			}
			if lines[1] != "/dev/null" {
				t.Errorf("fd 3 in COMMAND: %q, want the caller's /dev/null", lines[1])
			}
		})
	}
}

func TestNotificationsRelayed(t *testing.T) {
	// A stand-in for systemd's socket, which learns each sender's pid.
	path := filepath.Join(t.TempDir(), "notify")
	manager, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer manager.Close()
	raw, err := manager.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	raw.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_PASSCRED, 1) })

	events := newFIFO(t, "events")
	s := start(t, opts{env: []string{"NOTIFY_SOCKET=" + path, "F=" + events.path, "HELPER=" + bin().helper},
		args: []string{"sh", "-c", `echo "command $NOTIFY_SOCKET" > "$F"; "$HELPER" notify 'READY=1\nMAINPID=1\nSTATUS=up' > /dev/null; exec sleep 300`},
	})
	line := events.next(t)
	if !strings.HasPrefix(line, "command @reaper-notify-") {
		t.Errorf("COMMAND's NOTIFY_SOCKET: %q, want reaper's relay", line)
	}
	buf, oob := make([]byte, 4096), make([]byte, 1024)
	manager.SetReadDeadline(time.Now().Add(deadline))
	n, oobn, _, _, err := manager.ReadMsgUnix(buf, oob)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(buf[:n]); got != "READY=1\nSTATUS=up" {
		t.Errorf("the manager got %q, want READY=1 and STATUS=up, MAINPID= removed", got)
	}
	msgs, _ := syscall.ParseSocketControlMessage(oob[:oobn])
	if len(msgs) != 1 {
		t.Fatalf("no credentials with the datagram")
	}
	cred, err := syscall.ParseUnixCredentials(&msgs[0])
	if err != nil || int(cred.Pid) != s.reaperPID() {
		t.Errorf("sent by pid %v (%v), want reaper's %d: the main process", cred, err, s.reaperPID())
	}
	s.signal(syscall.SIGTERM)
	if r := s.wait(); r.status() != 143 || r.leftovers() != "" {
		t.Errorf("exit %d, left %s\n%s", r.status(), r.leftovers(), r.Stderr)
	}
}
