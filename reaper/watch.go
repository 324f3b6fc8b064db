package reaper

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// exitWatcher reports when watched processes exit, children or not: a pidfd
// becomes readable when its process exits. The pidfds go into an epoll set,
// and the epoll fd itself into the Go runtime's poller, so that the goroutine
// that waits on it parks without holding an OS thread: reaper must not need
// a new thread while a fork bomb has used up pids.max. The goroutine only
// passes tokens to the event loop; it owns no process state.
type exitWatcher struct {
	set  *pollSet
	C    chan []int32  // tokens of exited processes
	done chan struct{} // closed by stop
}

func newExitWatcher() (*exitWatcher, error) {
	set, err := newPollSet()
	if err != nil {
		return nil, err
	}
	w := &exitWatcher{set: set, C: make(chan []int32, 1), done: make(chan struct{})}
	go w.run()
	return w, nil
}

// pollSet is an epoll set in the Go runtime's poller: a goroutine that waits
// for it to become readable parks without holding an OS thread.
type pollSet struct {
	file *os.File
	raw  syscall.RawConn
}

func newPollSet() (*pollSet, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("epoll fd: %w", err)
	}
	file := os.NewFile(uintptr(epfd), "epoll")
	raw, err := file.SyscallConn()
	if err != nil {
		file.Close()
		return nil, fmt.Errorf("epoll fd: %w", err)
	}
	return &pollSet{file: file, raw: raw}, nil
}

// add watches fd for events, reported with data.
func (p *pollSet) add(fd int, events uint32, data int32) error {
	ev := unix.EpollEvent{Events: events, Fd: data}
	var ctlErr error
	if err := p.raw.Control(func(epfd uintptr) {
		ctlErr = unix.EpollCtl(int(epfd), unix.EPOLL_CTL_ADD, fd, &ev)
	}); err != nil {
		return err
	}
	if ctlErr != nil {
		return fmt.Errorf("epoll_ctl: %w", ctlErr)
	}
	return nil
}

// wait parks until the set has events and returns them in events; an error
// means the set was closed or epoll_wait failed.
func (p *pollSet) wait(events []unix.EpollEvent) ([]unix.EpollEvent, error) {
	var n int
	var waitErr error
	err := p.raw.Read(func(epfd uintptr) bool {
		n, waitErr = unix.EpollWait(int(epfd), events, 0)
		if errors.Is(waitErr, unix.EINTR) {
			n, waitErr = 0, nil
		}
		return n > 0 || waitErr != nil // nothing yet: park until the epoll fd is readable
	})
	if err == nil {
		err = waitErr
	}
	if err != nil {
		return nil, err
	}
	return events[:n], nil
}

// close closes the set; a goroutine in wait returns an error.
func (p *pollSet) close() { p.file.Close() }

// add watches fd (a pidfd) and reports token once when it becomes readable.
func (w *exitWatcher) add(fd int, token int32) error {
	return w.set.add(fd, unix.EPOLLIN|unix.EPOLLONESHOT, token)
}

func (w *exitWatcher) run() {
	events := make([]unix.EpollEvent, 128)
	for {
		ready, err := w.set.wait(events)
		if err != nil {
			return // closed by stop
		}
		tokens := make([]int32, len(ready))
		for i, ev := range ready {
			tokens[i] = ev.Fd
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
	w.set.close()
}
