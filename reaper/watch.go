package reaper

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// exitWatcher reports when watched processes exit, children or not: a pidfd
// becomes readable when its process exits. One goroutine blocks in
// epoll_wait and passes tokens to the event loop; it owns no process state.
type exitWatcher struct {
	epfd   int
	wakefd int           // eventfd that stops the goroutine
	C      chan []int32  // tokens of exited processes
	done   chan struct{} // closed by stop
	exited chan struct{} // closed when the goroutine returns
}

// stopToken marks the wake eventfd in the epoll set.
const stopToken = -1

func newExitWatcher() (*exitWatcher, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	w := &exitWatcher{epfd: epfd, wakefd: wakefd, C: make(chan []int32, 1),
		done: make(chan struct{}), exited: make(chan struct{})}
	if err := w.add(wakefd, stopToken); err != nil {
		w.closeFDs()
		return nil, err
	}
	go w.run()
	return w, nil
}

// add watches fd (a pidfd) and reports token once when it becomes readable.
func (w *exitWatcher) add(fd int, token int32) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLONESHOT, Fd: token}
	if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	return nil
}

func (w *exitWatcher) run() {
	defer close(w.exited)
	events := make([]unix.EpollEvent, 128)
	for {
		n, err := unix.EpollWait(w.epfd, events, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return
		}
		tokens := make([]int32, 0, n)
		for _, ev := range events[:n] {
			if ev.Fd == stopToken {
				return
			}
			tokens = append(tokens, ev.Fd)
		}
		select {
		case w.C <- tokens:
		case <-w.done:
			return
		}
	}
}

// stop ends the goroutine and closes the epoll and event fds. Watched
// pidfds stay open: they belong to the caller.
func (w *exitWatcher) stop() {
	close(w.done)
	one := []byte{1, 0, 0, 0, 0, 0, 0, 0}
	unix.Write(w.wakefd, one)
	<-w.exited
	w.closeFDs()
}

func (w *exitWatcher) closeFDs() {
	unix.Close(w.epfd)
	unix.Close(w.wakefd)
}
