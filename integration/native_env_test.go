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

	"github.com/reaper-init/reaper/integration/itest"
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
		{"stray trampoline variable", `LISTEN_PID=$$ WATCHDOG_PID=$$ REAPER_EXEC_WITH_PID=$PPID:1:2:LISTEN_PID:/bin/false`,
			func(pid string) string { return pid + " " + pid + " " + pid }},
		// reaper's own file, but another parent: still stray.
		{"stray trampoline variable naming reaper's file", `LISTEN_PID=$$ WATCHDOG_PID=$$ REAPER_EXEC_WITH_PID=1:$(stat -L -c %d:%i "$REAPER"):LISTEN_PID:/bin/false`,
			func(pid string) string { return pid + " " + pid + " " + pid }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), itest.Deadline)
			defer cancel()
			script := fmt.Sprintf(`exec 3</dev/null; %s LISTEN_FDS=1 LISTEN_FDNAMES=web WATCHDOG_USEC=1000000 exec "$REAPER" sh -c '%s'`, tc.vars, command)
			cmd := exec.CommandContext(ctx, "sh", "-c", script)
			cmd.Env = append(os.Environ(), "REAPER="+itest.Bin().Reaper)
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

// TestPidVariablesInAForeignProc: in a PID namespace whose /proc is still
// the parent's (unshare --pid without --mount-proc), the trampoline still
// recognises reaper (it compares its own file, not /proc/PPID's), so
// COMMAND gets its own pid in LISTEN_PID and WATCHDOG_PID.
func TestPidVariablesInAForeignProc(t *testing.T) {
	itest.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), itest.Deadline)
	defer cancel()
	// The namespace's pid 1 is a shell; the caller of reaper is pid 2.
	cmd := exec.CommandContext(ctx, "unshare", "--pid", "--fork", "--kill-child", "sh", "-c",
		`sh -c 'LISTEN_PID=$$ WATCHDOG_PID=$$ LISTEN_FDS=1 exec "$REAPER" sh -c "echo \$\$ \$LISTEN_PID \$WATCHDOG_PID"'`)
	cmd.Env = append(os.Environ(), "REAPER="+itest.Bin().Reaper)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	f := strings.Fields(stdout.String())
	if len(f) != 3 || f[0] != f[1] || f[0] != f[2] {
		t.Errorf("COMMAND (pid, LISTEN_PID, WATCHDOG_PID) = %q, want its own pid three times\nstderr: %s", stdout.String(), stderr.String())
	}
}

// TestNotificationsRelayed: COMMAND's notifications reach the manager from
// reaper, the main process; also as PID 1 of a namespace whose /proc is
// the parent's, where the relay cannot walk /proc and accepts COMMAND's
// process group.
func TestNotificationsRelayed(t *testing.T) {
	t.Run("own /proc", func(t *testing.T) { notificationsRelayed(t, false) })
	t.Run("foreign /proc", func(t *testing.T) { notificationsRelayed(t, true) })
	t.Run("sender gone before it is read", notificationOfAGoneSender)
}

// notificationOfAGoneSender: systemd-notify in a script sends and exits at
// once, often before reaper reads the datagram. With reaper stopped, the
// sender sends, exits and is reaped; once reaper runs again, its
// notification is still relayed.
func notificationOfAGoneSender(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	manager, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer manager.Close()
	goR, goW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer goW.Close()
	events := itest.NewFIFO(t, "events")
	s := itest.Start(t, itest.Opts{Env: []string{"NOTIFY_SOCKET=" + path, "F=" + events.Path, "HELPER=" + itest.Bin().Helper}, Stdin: goR,
		Args: []string{"sh", "-c", `echo waiting > "$F"; read go; "$HELPER" notify READY=1 > "$F"; echo reaped > "$F"; exec sleep 300`}})
	goR.Close()
	if line := events.Next(t); line != "waiting" {
		t.Fatalf("COMMAND wrote %q", line)
	}
	reaper := s.ReaperPID()
	if err := syscall.Kill(reaper, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitState(t, reaper, 'T')
	goW.WriteString("go\n")
	if line := events.Next(t); !strings.HasPrefix(line, "sent ") {
		t.Fatalf("the sender wrote %q", line)
	}
	if line := events.Next(t); line != "reaped" { // the shell waited for it
		t.Fatalf("COMMAND wrote %q", line)
	}
	syscall.Kill(reaper, syscall.SIGCONT)
	buf := make([]byte, 4096)
	manager.SetReadDeadline(time.Now().Add(itest.Deadline))
	n, err := manager.Read(buf)
	if err != nil || string(buf[:n]) != "READY=1" {
		t.Errorf("the manager got %q (%v), want READY=1 from the sender gone meanwhile", buf[:n], err)
	}
	s.Signal(syscall.SIGTERM)
	if r := s.Wait(); r.Status() != 143 || r.Leftovers() != "" {
		t.Errorf("exit %d, left %s\n%s", r.Status(), r.Leftovers(), r.Stderr)
	}
}

func notificationsRelayed(t *testing.T, foreign bool) {
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

	events := itest.NewFIFO(t, "events")
	s := itest.Start(t, itest.Opts{PID1: foreign, NoMountProc: foreign, Env: []string{"NOTIFY_SOCKET=" + path, "F=" + events.Path, "HELPER=" + itest.Bin().Helper},
		Args: []string{"sh", "-c", `echo "command $NOTIFY_SOCKET" > "$F"; "$HELPER" notify 'READY=1\nMAINPID=1\nSTATUS=up' > /dev/null; exec sleep 300`},
	})
	line := events.Next(t)
	if !strings.HasPrefix(line, "command @reaper-notify-") {
		t.Errorf("COMMAND's NOTIFY_SOCKET: %q, want reaper's relay", line)
	}
	buf, oob := make([]byte, 4096), make([]byte, 1024)
	manager.SetReadDeadline(time.Now().Add(itest.Deadline))
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
	if err != nil || int(cred.Pid) != s.ReaperPID() {
		t.Errorf("sent by pid %v (%v), want reaper's %d: the main process", cred, err, s.ReaperPID())
	}
	s.Signal(syscall.SIGTERM)
	if r := s.Wait(); r.Status() != 143 || r.Leftovers() != "" {
		t.Errorf("exit %d, left %s\n%s", r.Status(), r.Leftovers(), r.Stderr)
	}
}
