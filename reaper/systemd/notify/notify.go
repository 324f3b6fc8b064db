// Package notify relays systemd's notification protocol (sd_notify(3)) from
// a supervised command to the service manager, for a wrapper that stays the
// unit's main process.
//
// With the default NotifyAccess=main, systemd accepts notifications only
// from a unit's main process: behind a wrapper, COMMAND's READY=1 is
// refused and a Type=notify unit never starts. A Relay gives COMMAND a
// socket of its own, to be exported to it as NOTIFY_SOCKET (see Address),
// and passes every datagram COMMAND's tree sends there on to the manager's
// socket, from the wrapper, which the manager accepts as the main process.
//
// What is relayed:
//
//   - Every assignment, byte for byte and in the order sent (unless one
//     is removed, below): READY=1,
//     RELOADING=1, STOPPING=1, STATUS=, ERRNO=, WATCHDOG=1,
//     WATCHDOG=trigger, WATCHDOG_USEC=, EXTEND_TIMEOUT_USEC=, FDSTORE=1,
//     FDNAME=, FDSTOREREMOVE=1, BARRIER=1, MONOTONIC_USEC=, and those this
//     package does not know.
//   - The file descriptors sent with a datagram (SCM_RIGHTS), with it. The
//     relay closes its own copies as soon as the datagram is sent or
//     dropped, so a sender waiting in sd_notify_barrier(3) sees POLLHUP
//     once the manager has closed its copy.
//
// What is not:
//
//   - MAINPID=, MAINPIDFD=, MAINPIDFDID= and NOTIFYACCESS= assignments.
//     The relay sends with the wrapper's credentials, which the manager
//     trusts: with these, any process of COMMAND's tree could make any
//     process on the host the unit's main process (which systemctl stop
//     then signals), or let any process notify. And the wrapper must stay
//     the main process: it reaps and tears down COMMAND's tree, and its
//     exit is what the manager must see. The datagram is read exactly as
//     systemd reads it (see assignments: lines end at '\n' or '\r', a
//     backslash escapes the byte after it, the text ends at the first
//     NUL), these assignments are removed, and every other is relayed, in
//     order, joined by '\n'. So is an assignment holding an escaped line
//     break, which systemd before 247 would split. A datagram whose
//     MAINPIDFD= is removed loses its descriptors too (the pidfd that goes
//     with it); one with no assignment left, or which systemd would ignore
//     whole (a backslash at its end), is dropped. The first removal is
//     logged at info level.
//   - Datagrams from senders accept refuses. Open enables SO_PASSCRED on
//     COMMAND's socket, so the kernel attaches each sender's pid, uid and
//     gid (pid 0 when the sender's PID namespace is not visible from the
//     wrapper's); accept decides from them. A datagram without credentials
//     never reaches accept. Refused datagrams are counted (Stats) and
//     logged at debug level. The sender's pid is the one it had when it
//     sent: accept sees it when the datagram is relayed, when the sender
//     may have exited (systemd-notify in a script does at once); accept
//     must decide such a case from the credentials alone.
//     A sender with CAP_SYS_ADMIN can claim another pid.
//   - Datagrams longer than 16 KiB (systemd 252 itself accepts 4 KiB), or
//     whose control data did not fit: dropped with a warning, never relayed
//     in part.
//   - Datagrams the manager has no room for. The relay waits for room in
//     the manager's queue for at most 5 seconds, then drops the datagram
//     with a warning; it never blocks forever.
//
// The manager sees the wrapper's credentials on every relayed datagram:
// the sender's own are not passed on.
//
// COMMAND's socket is an abstract Unix datagram socket with an unguessable
// name ("@reaper-notify-PID-RANDOM"): nothing is left on disk when the
// wrapper is SIGKILLed, and no file permission stops a COMMAND that dropped
// its privileges. Abstract names belong to a network namespace: a process
// of COMMAND's tree that moved to another one cannot reach the relay, and
// any process of the wrapper's may send to it: accept is the boundary. Its datagrams are read through the Go runtime's
// poller: an idle relay holds no OS thread and never wakes up. Every
// descriptor the package makes or receives is close-on-exec.
package notify

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"

	"github.com/reaper-init/reaper/reaper/logs"
)

// Variable is the environment variable that names the manager's socket,
// and COMMAND's.
const Variable = "NOTIFY_SOCKET"

const (
	// maxDatagram is the longest datagram relayed. systemd 252 refuses
	// notifications longer than PIPE_BUF (4096 bytes).
	maxDatagram = 16 << 10
	// maxControl holds the credentials and the most descriptors one
	// datagram can carry (SCM_MAX_FD, 253), with room to spare.
	maxControl = 4 << 10
	// sendWait bounds the wait for room in the manager's queue.
	sendWait = 5 * time.Second
)

// ErrUnsupportedAddress is returned by Open for a NOTIFY_SOCKET value that
// is neither an absolute path nor an abstract name ("@..."), such as
// systemd's "vsock:" addresses.
var ErrUnsupportedAddress = errors.New("unsupported notification socket address")

// ErrClosed is returned by Serve once Close has been called.
var ErrClosed = errors.New("notification relay closed")

// Stats counts datagrams received on COMMAND's socket.
type Stats struct {
	Relayed uint64 // sent on to the manager
	Refused uint64 // no credentials, or refused by accept
	Dropped uint64 // too long, control data truncated, nothing left, or not sent
}

// Relay relays sd_notify datagrams from COMMAND's tree to the service
// manager. Its methods may be called from any goroutine.
type Relay struct {
	addr     string
	upstream string
	accept   func(unix.Ucred) bool
	log      *logs.Logger

	in  *socket // COMMAND's, bound to addr
	out *socket // connected to the manager's

	buf, oob []byte        // receive buffers, used by Serve alone
	sendWait time.Duration // see sendWait

	relayed, refused, dropped atomic.Uint64
	toldRemoved               bool // used by Serve alone

	serving   atomic.Bool
	closed    atomic.Bool
	closeOnce sync.Once
	done      chan struct{} // closed when Serve returns
}

// Open makes COMMAND's notification socket and connects to upstream, the
// value of NOTIFY_SOCKET the wrapper got: an absolute path, or an abstract
// name written "@name". Any other form is an error wrapping
// ErrUnsupportedAddress; the caller should then leave NOTIFY_SOCKET as it
// is. accept decides, from a sender's credentials, whether its datagram is
// relayed; it is called from Serve's goroutine, once per datagram. The
// relay logs to log (nil: nowhere) at debug level the datagrams it refuses,
// at info level the first MAINPID= or NOTIFYACCESS= it removes, and
// warnings for datagrams it cannot relay.
func Open(upstream string, accept func(unix.Ucred) bool, log *logs.Logger) (*Relay, error) {
	if accept == nil {
		return nil, errors.New("notify: Open with a nil accept")
	}
	to, err := managerAddr(upstream)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = logs.Discard()
	}
	out, err := dial(to)
	if err != nil {
		return nil, fmt.Errorf("notify: connecting to %s=%s: %w", Variable, upstream, err)
	}
	in, addr, err := listen()
	if err != nil {
		out.close()
		return nil, fmt.Errorf("notify: making the command's socket: %w", err)
	}
	return &Relay{
		addr: addr, upstream: upstream, accept: accept, log: log,
		in: in, out: out,
		buf: make([]byte, maxDatagram+1), oob: make([]byte, maxControl),
		sendWait: sendWait,
		done:     make(chan struct{}),
	}, nil
}

// Address is NOTIFY_SOCKET's value for COMMAND.
func (r *Relay) Address() string { return r.addr }

// Stats returns the counts of datagrams received so far.
func (r *Relay) Stats() Stats {
	return Stats{Relayed: r.relayed.Load(), Refused: r.refused.Load(), Dropped: r.dropped.Load()}
}

// Serve relays datagrams until Close is called, then returns ErrClosed.
// Run it in a goroutine of its own. It returns another error only when
// COMMAND's socket cannot be read; nothing is relayed after that. Serve
// may be called once.
func (r *Relay) Serve() error {
	if !r.serving.CompareAndSwap(false, true) {
		return errors.New("notify: Serve called twice")
	}
	defer close(r.done)
	for {
		d, err := r.receive()
		if err != nil {
			if r.closed.Load() {
				return ErrClosed
			}
			return fmt.Errorf("notify: receiving on %s: %w", r.addr, err)
		}
		r.handle(d)
	}
}

// Close stops Serve, waits until it has returned, and closes both sockets.
// Datagrams not relayed yet are lost. Close may be called more than once.
func (r *Relay) Close() error {
	r.closeOnce.Do(func() {
		r.closed.Store(true)
		r.in.close()
		r.out.close()
	})
	if r.serving.Load() {
		<-r.done
	}
	return nil
}

// datagram is one datagram received on COMMAND's socket.
type datagram struct {
	data  []byte      // aliases Relay.buf until the next receive
	fds   []int       // received with SCM_RIGHTS; the relay owns them
	cred  *unix.Ucred // nil when none came
	flags int         // recvmsg's
}

// receive waits for the next datagram.
func (r *Relay) receive() (datagram, error) {
	var n, oobn, flags int
	var recvErr error
	err := r.in.raw.Read(func(fd uintptr) bool {
		for {
			n, oobn, flags, _, recvErr = unix.Recvmsg(int(fd), r.buf, r.oob, unix.MSG_CMSG_CLOEXEC|unix.MSG_DONTWAIT)
			if recvErr != unix.EINTR {
				return recvErr != unix.EAGAIN // nothing yet: park until readable
			}
		}
	})
	if err == nil {
		err = recvErr
	}
	if err != nil {
		return datagram{}, err
	}
	d := datagram{data: r.buf[:min(n, maxDatagram)], flags: flags}
	if n > maxDatagram {
		d.flags |= unix.MSG_TRUNC
	}
	d.fds, d.cred = parseControl(r.oob[:oobn])
	return d, nil
}

// parseControl returns the descriptors and the credentials in control
// data. A malformed message ends the parse: the kernel writes none.
func parseControl(oob []byte) (fds []int, cred *unix.Ucred) {
	msgs, _ := unix.ParseSocketControlMessage(oob)
	for i := range msgs {
		m := &msgs[i]
		if m.Header.Level != unix.SOL_SOCKET {
			continue
		}
		switch m.Header.Type {
		case unix.SCM_RIGHTS:
			if got, err := unix.ParseUnixRights(m); err == nil {
				fds = append(fds, got...)
			}
		case unix.SCM_CREDENTIALS:
			if c, err := unix.ParseUnixCredentials(m); err == nil {
				cred = c
			}
		}
	}
	return fds, cred
}

// handle relays or drops one datagram, and closes its descriptors either
// way.
func (r *Relay) handle(d datagram) {
	defer closeAll(d.fds)
	switch {
	case d.flags&unix.MSG_TRUNC != 0:
		r.drop("notification dropped: longer than the relay takes", logs.Int("max_bytes", maxDatagram), r.sender(d))
		return
	case d.flags&unix.MSG_CTRUNC != 0:
		r.drop("notification dropped: its control data (descriptors) did not fit", logs.Int("fds_received", len(d.fds)), r.sender(d))
		return
	case d.cred == nil || d.cred.Pid <= 0:
		r.refused.Add(1)
		r.log.Debug("notification refused: the sender's pid is unknown", r.sender(d))
		return
	case !r.accept(*d.cred):
		r.refused.Add(1)
		r.log.Debug("notification refused: the sender is not accepted", r.sender(d),
			logs.Int("uid", int(d.cred.Uid)), logs.Int("gid", int(d.cred.Gid)))
		return
	}
	f := filter(d.data)
	fds := d.fds
	if f.unreadable {
		r.drop("notification dropped: it ends in a backslash, which makes systemd ignore it", r.sender(d))
		return
	}
	if len(f.removed) > 0 {
		if !r.toldRemoved {
			r.toldRemoved = true
			r.log.Info("MAINPID= or NOTIFYACCESS= removed from a notification: reaper stays the unit's main process",
				r.sender(d), logs.String("removed", strings.Join(f.removed, ",")))
		}
		if f.pidfd {
			fds = nil
		}
	}
	if len(f.msg) == 0 && len(d.data) > 0 {
		r.drop("notification dropped: nothing left to relay", r.sender(d))
		return
	}
	if err := r.send(f.msg, fds); err != nil {
		if r.closed.Load() {
			r.dropped.Add(1)
			return
		}
		r.drop("notification not relayed to the service manager", logs.String("socket", r.upstream), r.sender(d), logs.Err(err))
		return
	}
	r.relayed.Add(1)
}

// drop counts a dropped datagram and logs the warning.
func (r *Relay) drop(msg string, fields ...zapcore.Field) {
	r.dropped.Add(1)
	r.log.Warn(msg, fields...)
}

// sender is the log field that names a datagram's sender.
func (r *Relay) sender(d datagram) zapcore.Field {
	if d.cred == nil {
		return logs.String("sender", "unknown")
	}
	return logs.Int("sender", int(d.cred.Pid))
}

// send sends msg with fds to the manager. When the manager's queue is
// full it waits for room, up to sendWait. A manager socket that went away
// since Open (ECONNREFUSED) is connected to again, once.
func (r *Relay) send(msg []byte, fds []int) error {
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if err := r.out.file.SetWriteDeadline(time.Now().Add(r.sendWait)); err != nil {
		return err
	}
	err := r.out.send(msg, oob)
	if errors.Is(err, unix.ECONNREFUSED) || errors.Is(err, unix.ENOTCONN) {
		if err = r.out.reconnect(); err == nil {
			err = r.out.send(msg, oob)
		}
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("the service manager's queue stayed full for %v", r.sendWait)
	}
	return err
}

// closeAll closes descriptors the relay received.
func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}
