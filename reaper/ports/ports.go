// Package ports is --wait-port: before COMMAND starts, wait until nobody
// listens on the TCP ports named, naming who holds them (a leftover of an
// earlier run of the instance, or someone else) from /proc.
package ports

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/reaper-init/reaper/reaper/logs"
	"github.com/reaper-init/reaper/reaper/procfs"
)

// portPoll is how often --wait-port looks again: the kernel announces no
// port being released.
const portPoll = 100 * time.Millisecond

// parseNetTCP returns the socket inodes listening on port in the text of
// /proc/net/tcp or /proc/net/tcp6.
func parseNetTCP(data []byte, port int) ([]uint64, error) {
	var inodes []uint64
	sc := bufio.NewScanner(bytes.NewReader(data))
	first := true
	for sc.Scan() {
		if first { // the header
			first = false
			continue
		}
		// sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
		f := strings.Fields(sc.Text())
		if len(f) < 10 {
			return nil, fmt.Errorf("net/tcp: short line %q", sc.Text())
		}
		_, portHex, ok := strings.Cut(f[1], ":")
		if !ok {
			return nil, fmt.Errorf("net/tcp: bad address %q", f[1])
		}
		p, err := strconv.ParseUint(portHex, 16, 16)
		if err != nil {
			return nil, fmt.Errorf("net/tcp: bad port %q", portHex)
		}
		const listen = "0A"
		if int(p) != port || f[3] != listen {
			continue
		}
		inode, err := strconv.ParseUint(f[9], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("net/tcp: bad inode %q", f[9])
		}
		inodes = append(inodes, inode)
	}
	return inodes, sc.Err()
}

// portHolder is a process holding a listening socket.
type portHolder struct {
	pid      int // 0 when no visible process holds the socket
	cmdline  string
	leftover bool // it carries a marker of this instance's earlier runs
}

func (h portHolder) String() string {
	if h.pid == 0 {
		return "a process reaper cannot see"
	}
	s := fmt.Sprintf("pid %d (%s)", h.pid, h.cmdline)
	if h.leftover {
		s += ", a leftover of this instance"
	}
	return s
}

// listening returns the inodes of the sockets listening on TCP port, from
// /proc/net/tcp{,6}; none when nobody listens.
func listening(port int) map[uint64]bool {
	want := map[uint64]bool{}
	for _, file := range []string{"/net/tcp", "/net/tcp6"} {
		var buf [4096]byte
		data, err := procfs.ReadFile(procfs.Root+file, buf[:])
		if err != nil {
			continue
		}
		inodes, _ := parseNetTCP(data, port)
		for _, ino := range inodes {
			want[ino] = true
		}
	}
	return want
}

// holders names who holds the listening sockets inodes, through the
// socket inodes in /proc/PID/fd: a walk of every process's descriptors,
// done only to name them in a warning or an error.
func holders(inodes map[uint64]bool, markers [][]byte) []portHolder {
	want := make(map[uint64]bool, len(inodes))
	for ino := range inodes {
		want[ino] = true
	}
	var found []portHolder
	pids, _ := procfs.ListPIDs(procfs.Root)
	for _, pid := range pids {
		dir := procfs.Path(pid, "fd")
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range entries {
			link, err := os.Readlink(dir + "/" + e.Name())
			if err != nil || !strings.HasPrefix(link, "socket:[") {
				continue
			}
			ino, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]"), 10, 64)
			if err == nil && want[ino] {
				found = append(found, portHolder{pid: pid, cmdline: procfs.CommandLine(pid), leftover: procfs.HasEnvItem(pid, markers...)})
				delete(want, ino)
				break
			}
		}
	}
	if len(want) > 0 {
		found = append(found, portHolder{})
	}
	return found
}

// Wait waits until nobody listens on ports, naming the holders it
// finds; it fails when timeout passes, or when pause reports a stop request.
// Each look reads /proc/net/tcp{,6} alone; the holders are looked for
// once, to name them, and again if the timeout passes.
func Wait(ports []int, timeout time.Duration, markers [][]byte, log *logs.Logger, pause func(time.Duration) bool) error {
	end := time.Now().Add(timeout)
	for _, port := range ports {
		named := false
		for {
			inodes := listening(port)
			if len(inodes) == 0 {
				break
			}
			if !named {
				for _, h := range holders(inodes, markers) {
					log.Warn("port is held: waiting for it", logs.Int("port", port), logs.String("holder", h.String()))
				}
				named = true
			}
			if time.Now().After(end) {
				return fmt.Errorf("port %d is still held by %s after %v", port, holders(inodes, markers)[0], timeout)
			}
			if pause(portPoll) {
				return errors.New("stopped")
			}
		}
	}
	return nil
}
