package handle

import (
	"errors"
	"time"

	"golang.org/x/sys/unix"

	"github.com/reaper-init/reaper/reaper/poll"
)

// Watcher reports when watched processes exit, children or not: a pidfd
// becomes readable when its process exits. The pidfds go into an epoll set
// in the Go runtime's poller, so that the goroutine that waits on it parks
// without holding an OS thread. The goroutine only passes tokens on; it
// owns no process state.
type Watcher struct {
	set  *poll.Set
	C    chan []int32  // tokens of exited processes
	done chan struct{} // closed by Stop
}

// NewWatcher starts a Watcher.
func NewWatcher() (*Watcher, error) {
	set, err := poll.New()
	if err != nil {
		return nil, err
	}
	w := &Watcher{set: set, C: make(chan []int32, 1), done: make(chan struct{})}
	go w.run()
	return w, nil
}

// Add watches h, which must have a pidfd, and reports token once when its
// process exits.
func (w *Watcher) Add(h *Handle, token int32) error {
	if h.fd < 0 {
		return errors.New("no pidfd to watch")
	}
	return w.set.Add(h.fd, unix.EPOLLIN|unix.EPOLLONESHOT, token)
}

func (w *Watcher) run() {
	events := make([]unix.EpollEvent, 128)
	for {
		ready, err := w.set.Wait(events)
		if err != nil {
			return // closed by Stop
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

// Stop ends the goroutine and closes the epoll fd. Watched pidfds stay
// open: they belong to their handles.
func (w *Watcher) Stop() {
	close(w.done)
	w.set.Close()
}

// WaitAll waits until every handle's process has exited, until deadline, or
// until stop reports true (asked every 100 ms when given); it reports
// whether all exited. Handles without a pidfd count as exited when Exited
// says so, asked at the same pace.
func WaitAll(hs []*Handle, deadline time.Time, stop func() bool) bool {
	pending := append([]*Handle(nil), hs...)
	for {
		still := pending[:0]
		for _, h := range pending {
			if !h.Exited() {
				still = append(still, h)
			}
		}
		pending = still
		left := time.Until(deadline)
		if len(pending) == 0 {
			return true
		}
		if left <= 0 || (stop != nil && stop()) {
			return false
		}
		if stop != nil || !allHaveFDs(pending) {
			left = min(left, 100*time.Millisecond)
		}
		fds := make([]unix.PollFd, 0, len(pending))
		for _, h := range pending {
			if h.fd >= 0 {
				fds = append(fds, unix.PollFd{Fd: int32(h.fd), Events: unix.POLLIN})
			}
		}
		if _, err := unix.Poll(fds, int(left.Milliseconds())+1); err != nil && !errors.Is(err, unix.EINTR) {
			return false
		}
	}
}

func allHaveFDs(hs []*Handle) bool {
	for _, h := range hs {
		if h.fd < 0 {
			return false
		}
	}
	return true
}
