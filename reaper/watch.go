package reaper

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// exitWatcher reports when watched processes exit, children or not: a pidfd
// becomes readable when its process exits. The pidfds go into an epoll set,
// and the epoll fd itself into the Go runtime's poller, so that the goroutine
// that waits on it parks without holding an OS thread: reaper must not need
// a new thread while a fork bomb has used up pids.max. The goroutine only
// passes tokens to the event loop; it owns no process state.
type exitWatcher struct {
	epoll *os.File
	C     chan []int32  // tokens of exited processes
	done  chan struct{} // closed by stop
}

func newExitWatcher() (*exitWatcher, error) {
	ep, err := newPollSet()
	if err != nil {
		return nil, err
	}
	w := &exitWatcher{epoll: ep, C: make(chan []int32, 1), done: make(chan struct{})}
	raw, err := w.epoll.SyscallConn()
	if err != nil {
		w.epoll.Close()
		return nil, fmt.Errorf("epoll fd: %w", err)
	}
	go w.run(raw)
	return w, nil
}

// newPollSet returns a new, empty epoll set for the Go runtime's poller to
// watch: a goroutine that waits for it to become readable parks without
// holding an OS thread.
func newPollSet() (*os.File, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("epoll fd: %w", err)
	}
	return os.NewFile(uintptr(epfd), "epoll"), nil
}

// add watches fd (a pidfd) and reports token once when it becomes readable.
func (w *exitWatcher) add(fd int, token int32) error {
	raw, err := w.epoll.SyscallConn()
	if err != nil {
		return err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLONESHOT, Fd: token}
	var ctlErr error
	if err := raw.Control(func(epfd uintptr) {
		ctlErr = unix.EpollCtl(int(epfd), unix.EPOLL_CTL_ADD, fd, &ev)
	}); err != nil {
		return err
	}
	if ctlErr != nil {
		return fmt.Errorf("epoll_ctl: %w", ctlErr)
	}
	return nil
}

func (w *exitWatcher) run(raw interface {
	Read(func(fd uintptr) bool) error
}) {
	events := make([]unix.EpollEvent, 128)
	for {
		var tokens []int32
		err := raw.Read(func(epfd uintptr) bool {
			n, err := unix.EpollWait(int(epfd), events, 0)
			if errors.Is(err, unix.EINTR) || n <= 0 {
				return false // nothing yet: park until the epoll fd is readable
			}
			for _, ev := range events[:n] {
				tokens = append(tokens, ev.Fd)
			}
			return true
		})
		if err != nil {
			return // closed by stop
		}
		select {
		case w.C <- tokens:
		case <-w.done:
			return
		}
	}
}

// stop ends the goroutine and closes the epoll fd. Watched pidfds stay
// open: they belong to the caller.
func (w *exitWatcher) stop() {
	close(w.done)
	w.epoll.Close()
}
