package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/reaper-init/reaper/integration/itest"
	"golang.org/x/sys/unix"
)

// pty is a pseudo-terminal whose slave side is the controlling terminal of
// a session the test starts; the test types into the master side and reads
// what the session writes.
type pty struct {
	master *os.File
	slave  string
	out    bytes.Buffer // everything read so far
	cmd    *exec.Cmd
	done   chan struct{} // closed when the session leader has exited
}

// startOnPTY starts argv as the leader of a new session whose controlling
// terminal is a fresh pty.
func startOnPTY(t *testing.T, env []string, argv ...string) *pty {
	t.Helper()
	// Non-blocking from the start: os.NewFile then puts it in the runtime's
	// poller, and reads honour deadlines.
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		itest.Skip(t, "no pseudo-terminals here: %v", err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	master := os.NewFile(uintptr(fd), "ptmx")
	p := &pty{master: master, slave: "/dev/pts/" + strconv.Itoa(n), done: make(chan struct{})}
	slave, err := os.OpenFile(p.slave, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer slave.Close()
	unix.IoctlSetWinsize(int(slave.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 24, Col: 80})
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdin, p.cmd.Stdout, p.cmd.Stderr = slave, slave, slave
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			p.cmd.Process.Kill()
			<-p.done
		}
		master.Close()
	})
	return p
}

// expect reads from the terminal until pattern matches what was read since
// the last match, and returns the match.
func (p *pty) expect(t *testing.T, pattern string) []string {
	t.Helper()
	re := regexp.MustCompile(pattern)
	end := time.Now().Add(itest.Deadline)
	buf := make([]byte, 4096)
	for {
		if m := re.FindSubmatchIndex(p.out.Bytes()); m != nil {
			groups := make([]string, len(m)/2)
			for i := range groups {
				if m[2*i] >= 0 {
					groups[i] = string(p.out.Bytes()[m[2*i]:m[2*i+1]])
				}
			}
			p.out.Next(m[1])
			return groups
		}
		p.master.SetReadDeadline(end)
		n, err := p.master.Read(buf)
		p.out.Write(buf[:n])
		if err != nil {
			t.Fatalf("waiting for %q on the terminal: %v; it showed:\n%s", pattern, err, p.out.String())
		}
	}
}

// control runs an ioctl on the master (through SyscallConn: Fd would
// put the file back in blocking mode).
func (p *pty) control(t *testing.T, f func(fd int) error) error {
	t.Helper()
	raw, err := p.master.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var ferr error
	raw.Control(func(fd uintptr) { ferr = f(int(fd)) })
	return ferr
}

// send types s.
func (p *pty) send(t *testing.T, s string) {
	t.Helper()
	if _, err := p.master.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
}

// wait returns the session leader's status as a shell shows it: its exit
// code, or 128+N when signal N ended it.
func (p *pty) wait(t *testing.T) int {
	t.Helper()
	go func() { // keep draining the terminal, or writers block
		buf := make([]byte, 4096)
		for {
			p.master.SetReadDeadline(time.Now().Add(itest.Deadline))
			if _, err := p.master.Read(buf); err != nil {
				return
			}
		}
	}()
	select {
	case <-p.done:
		if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(itest.Deadline):
		t.Fatalf("the session did not end within %v", itest.Deadline)
		return -1
	}
}

const (
	ctrlC = "\x03"
	ctrlZ = "\x1a"
)

// onTTY runs f with reaper as the pty session's leader and, as root, as PID
// 1 of a PID namespace whose unshare leads the session.
func onTTY(t *testing.T, f func(t *testing.T, prefix []string)) {
	t.Run("subreaper", func(t *testing.T) { t.Parallel(); f(t, []string{itest.Bin().Reaper}) })
	t.Run("pid1", func(t *testing.T) {
		t.Parallel()
		itest.RequireRoot(t)
		f(t, []string{"unshare", "--pid", "--fork", "--mount-proc", "--kill-child", "--", itest.Bin().Reaper})
	})
}

func TestTerminalInteractiveShell(t *testing.T) {
	onTTY(t, func(t *testing.T, prefix []string) {
		p := startOnPTY(t, []string{"PS1=rp$ "}, append(prefix, "sh", "-i")...)
		p.expect(t, `rp\$ `)
		p.send(t, "echo he''llo; tty\r")
		p.expect(t, "hello\r\n"+regexp.QuoteMeta(p.slave))
		p.send(t, "exit 7\r")
		if code := p.wait(t); code != 7 {
			t.Errorf("exit %d, want the shell's 7", code)
		}
	})
}

func TestTerminalCtrlCGives130(t *testing.T) {
	onTTY(t, func(t *testing.T, prefix []string) {
		p := startOnPTY(t, nil, append(prefix, "-v", "sleep", "100")...)
		p.expect(t, `info: started`)
		// COMMAND's group has the terminal: Ctrl-C reaches it from the
		// kernel, not through reaper's forwarding.
		waitForeground(t, p, "sleep")
		p.send(t, ctrlC)
		if code := p.wait(t); code != 130 {
			t.Errorf("exit %d after Ctrl-C, want 130\n%s", code, p.out.String())
		}
	})
}

func TestTerminalWindowSizeReachesCommand(t *testing.T) {
	onTTY(t, func(t *testing.T, prefix []string) {
		script := `trap 'stty size; exit 0' WINCH; echo ready; while :; do sleep 1 & wait; done`
		p := startOnPTY(t, nil, append(prefix, "sh", "-c", script)...)
		p.expect(t, "ready")
		waitForeground(t, p, "sh")
		// A new size makes the kernel send SIGWINCH to the foreground group.
		p.control(t, func(fd int) error {
			return unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: 33, Col: 77})
		})
		p.expect(t, "33 77")
		if code := p.wait(t); code != 0 {
			t.Errorf("exit %d", code)
		}
	})
}

func TestTerminalSettingsRestored(t *testing.T) {
	// COMMAND leaves the terminal raw and without echo, as a killed editor
	// would; reaper puts back the settings it found.
	p := startOnPTY(t, nil, itest.Bin().Reaper, "sh", "-c", "stty raw -echo; kill -KILL $$")
	if code := p.wait(t); code != 137 {
		t.Errorf("exit %d, want 137", code)
	}
	slave, err := os.OpenFile(p.slave, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer slave.Close()
	tio, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if tio.Lflag&unix.ECHO == 0 || tio.Lflag&unix.ICANON == 0 {
		t.Errorf("terminal left with lflag %#x: echo or canonical mode missing", tio.Lflag)
	}
}

func TestTerminalJobControl(t *testing.T) {
	p := interactiveBash(t)
	p.send(t, "\"$REAPER\" -v -- sleep 100\r")
	p.expect(t, `info: started pid=\d+`)
	p.send(t, ctrlZ)
	// reaper stopped with COMMAND: bash has its prompt back.
	p.expect(t, `Stopped.*\n.*rp\$ `)
	p.send(t, "jobs -l\r")
	p.expect(t, `\[1\]\+\s+\d+ Stopped.*sleep 100`)
	p.send(t, "fg\r")
	p.expect(t, `sleep 100`)
	// fg continued reaper, which handed the terminal back to COMMAND: its
	// Ctrl-C reaches sleep.
	waitForeground(t, p, "sleep")
	p.send(t, ctrlC)
	p.expect(t, `rp\$ `)
	p.send(t, "echo rc=$?\r")
	p.expect(t, `rc=130`)
	p.send(t, "exit 0\r")
	p.wait(t)
}

// waitForeground waits until the terminal's foreground process group is led
// by a process named comm. The kernel announces no such change, so this one
// polls.
func waitForeground(t *testing.T, p *pty, comm string) {
	t.Helper()
	end := time.Now().Add(itest.Deadline)
	for {
		var pgrp int
		err := p.control(t, func(fd int) (err error) {
			pgrp, err = unix.IoctlGetInt(fd, unix.TIOCGPGRP)
			return err
		})
		if err == nil {
			if data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pgrp)); strings.TrimSpace(string(data)) == comm {
				return
			}
		}
		if time.Now().After(end) {
			t.Fatalf("%s never got the terminal's foreground", comm)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestNoTerminalNoIoctl(t *testing.T) {
	if _, err := exec.LookPath("strace"); err != nil {
		itest.Skip(t, "strace is not installed (apt-get install strace)")
	}
	for _, stdin := range []string{"/dev/null", "pipe"} {
		trace := t.TempDir() + "/trace"
		cmd := exec.Command("strace", "-f", "-qq", "-e", "trace=ioctl", "-o", trace, itest.Bin().Reaper, "-v", "true")
		if stdin == "/dev/null" {
			null, _ := os.Open(os.DevNull)
			defer null.Close()
			cmd.Stdin = null
		} else {
			cmd.Stdin = strings.NewReader("")
		}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v\n%s", cmd.Args, err, out)
		}
		data, _ := os.ReadFile(trace)
		if strings.Contains(string(data), "ioctl(") {
			t.Errorf("with stdin %s reaper made terminal ioctls:\n%s", stdin, data)
		}
	}
}

func TestTerminalJobControlThroughAScript(t *testing.T) {
	// reaper runs inside a script: Ctrl-Z must stop the whole job, script
	// included, or bash never gets its prompt back.
	p := interactiveBash(t)
	p.send(t, "sh -c '\"$REAPER\" -v -- sleep 100; echo after=$?'\r")
	p.expect(t, `info: started pid=\d+`)
	p.send(t, ctrlZ)
	p.expect(t, `Stopped.*\n.*rp\$ `)
	p.send(t, "fg\r")
	waitForeground(t, p, "sleep")
	p.send(t, ctrlC)
	p.expect(t, `after=130`)
	p.send(t, "exit 0\r")
	p.wait(t)
}

func TestTerminalBackAfterExecFailure(t *testing.T) {
	// COMMAND's group took the terminal, then its exec failed: reaper hands
	// the terminal back, or the script reading after it would stop.
	p := interactiveBash(t)
	p.send(t, "sh -c '\"$REAPER\" /etc/passwd; echo rc=$?; read x; echo got=$x'\r")
	p.expect(t, `rc=126`)
	p.send(t, "typed\r")
	p.expect(t, `got=typed`)
	p.send(t, "exit 0\r")
	p.wait(t)
}

// interactiveBash starts `bash -i` on a pty, with $REAPER naming reaper, and
// waits for its prompt, "rp$ ".
func interactiveBash(t *testing.T) *pty {
	t.Helper()
	if _, err := exec.LookPath("bash"); err != nil {
		itest.Skip(t, "bash is not installed")
	}
	p := startOnPTY(t, []string{"PS1=rp$ ", "REAPER=" + itest.Bin().Reaper}, "bash", "--norc", "--noprofile", "-i")
	p.expect(t, `rp\$ `)
	return p
}

// TestTerminalCtrlZInAnOrphanedGroup: reaper leads the terminal's session
// (docker exec -it, ssh -t host reaper -- vim, a tmux pane), so its process
// group is orphaned: nobody would ever continue it. Ctrl-Z stops COMMAND;
// reaper must not stop itself, and continues COMMAND, as a shell does
// there: the terminal still answers.
func TestTerminalCtrlZInAnOrphanedGroup(t *testing.T) {
	p := startOnPTY(t, nil, itest.Bin().Reaper, "-v", "sh", "-c", `echo ready; read line; echo "got $line"`)
	p.expect(t, "ready")
	waitForeground(t, p, "sh")
	p.send(t, ctrlZ)
	p.expect(t, `info: nobody could continue reaper`)
	if state := itest.ProcState(p.cmd.Process.Pid); state == 'T' {
		t.Fatal("reaper stopped itself")
	}
	p.send(t, "hello\r")
	p.expect(t, "got hello")
	if code := p.wait(t); code != 0 {
		t.Errorf("exit %d, want 0\n%s", code, p.out.String())
	}
}
