// Package poll is an epoll set in the Go runtime's network poller: a
// goroutine that waits on it parks without holding an OS thread. reaper
// must not need a new thread while a fork bomb has used up pids.max, and an
// idle reaper must not wake up: every descriptor it waits on (pidfds,
// cgroup.events) goes through a Set.
package poll

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// Set is an epoll set.
type Set struct {
	file *os.File
	raw  syscall.RawConn
}

// New makes an empty Set.
func New() (*Set, error) {
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
	return &Set{file: file, raw: raw}, nil
}

// Add watches fd for events, reported with data.
func (p *Set) Add(fd int, events uint32, data int32) error {
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

// Wait parks until the set has events and returns them in events; an error
// means the set was closed or epoll_wait failed.
func (p *Set) Wait(events []unix.EpollEvent) ([]unix.EpollEvent, error) {
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

// Close closes the set; a goroutine in Wait returns an error.
func (p *Set) Close() { p.file.Close() }
