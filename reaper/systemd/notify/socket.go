package notify

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/reaper-init/reaper/reaper/token"
)

// managerAddr parses NOTIFY_SOCKET's value as libsystemd does: an absolute
// path, or "@name" for the abstract name "\0name".
func managerAddr(value string) (*unix.SockaddrUnix, error) {
	var raw unix.RawSockaddrUnix
	switch {
	case value == "":
		return nil, fmt.Errorf("notify: %s is empty: %w", Variable, ErrUnsupportedAddress)
	case value[0] != '/' && value[0] != '@':
		return nil, fmt.Errorf("notify: %s=%s: %w", Variable, value, ErrUnsupportedAddress)
	case len(value) == 1 && value[0] == '@':
		return nil, fmt.Errorf("notify: %s=@ names no abstract socket: %w", Variable, ErrUnsupportedAddress)
	case len(value) > len(raw.Path) || len(value) == len(raw.Path) && value[0] == '/': // a path needs its NUL
		return nil, fmt.Errorf("notify: %s=%s: longer than a socket address: %w", Variable, value, ErrUnsupportedAddress)
	}
	// x/sys/unix turns a leading '@' into the abstract namespace's NUL.
	return &unix.SockaddrUnix{Name: value}, nil
}

// socket is a non-blocking datagram socket in the Go runtime's poller.
type socket struct {
	file *os.File
	raw  syscall.RawConn
	peer unix.Sockaddr // the address connected to, for dial's sockets
}

// send sends one datagram on a connected socket, parking in the poller
// until the peer has room or the write deadline passes.
func (s *socket) send(msg, oob []byte) error {
	var sendErr error
	err := s.raw.Write(func(fd uintptr) bool {
		for {
			// MSG_NOSIGNAL: a SIGPIPE of reaper's own must never be
			// taken for one to forward.
			_, sendErr = unix.SendmsgN(int(fd), msg, oob, nil, unix.MSG_NOSIGNAL|unix.MSG_DONTWAIT)
			if sendErr != unix.EINTR {
				return sendErr != unix.EAGAIN // full: park until writable
			}
		}
	})
	if err != nil {
		return err
	}
	return sendErr
}

// reconnect connects the socket to its peer again.
func (s *socket) reconnect() error {
	var connErr error
	if err := s.raw.Control(func(fd uintptr) { connErr = unix.Connect(int(fd), s.peer) }); err != nil {
		return err
	}
	if connErr != nil {
		return fmt.Errorf("connect: %w", connErr)
	}
	return nil
}

func (s *socket) close() { s.file.Close() }

// newSocket makes a non-blocking, close-on-exec datagram socket in the Go
// runtime's poller; setup runs on its descriptor first.
func newSocket(name string, setup func(fd int) error) (*socket, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	if err := setup(fd); err != nil {
		unix.Close(fd)
		return nil, err
	}
	// A non-blocking descriptor goes into the runtime's poller.
	file := os.NewFile(uintptr(fd), name)
	raw, err := file.SyscallConn()
	if err != nil {
		file.Close()
		return nil, err
	}
	return &socket{file: file, raw: raw}, nil
}

// dial makes the socket connected to the manager's. Connected, it learns
// from the poller when a full queue of the manager's has room again.
func dial(to *unix.SockaddrUnix) (*socket, error) {
	s, err := newSocket("notify-upstream", func(fd int) error {
		if err := unix.Connect(fd, to); err != nil {
			return fmt.Errorf("connect: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.peer = to
	return s, nil
}

// bindTries bounds the names listen tries: another process may hold one.
const bindTries = 8

// listen makes COMMAND's socket: SO_PASSCRED, set before the name exists
// so that every datagram carries its sender's credentials, and bound to a
// fresh abstract name. It returns the socket and the name, as
// NOTIFY_SOCKET writes it.
func listen() (*socket, string, error) {
	var addr string
	s, err := newSocket("notify", func(fd int) error {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
			return fmt.Errorf("SO_PASSCRED: %w", err)
		}
		var err error
		for range bindTries {
			addr = fmt.Sprintf("@reaper-notify-%d-%s", os.Getpid(), token.New(16))
			if err = unix.Bind(fd, &unix.SockaddrUnix{Name: addr}); !errors.Is(err, unix.EADDRINUSE) {
				break
			}
		}
		if err != nil {
			return fmt.Errorf("bind %s: %w", addr, err)
		}
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	return s, addr, nil
}
