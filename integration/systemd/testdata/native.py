"""Payloads of TestSystemdNative: services that speak systemd's protocols
the way libsystemd's sd_notify, sd_watchdog_enabled and sd_listen_fds do.

native.py MODE, where MODE is
  notify    Type=notify: READY=1 once up, then wait
  watchdog  Type=notify + WatchdogSec=: READY=1, then WATCHDOG=1 every
            quarter of WATCHDOG_USEC while sd_watchdog_enabled() says so
  socket    socket activation: serve the listening socket on fd 3 while
            sd_listen_fds() says so, each client one line
  reload    ExecReload=kill -HUP $MAINPID: note the HUP, and stay up
  stop      leave a TERM-ignoring escapee in a session of its own, then
            wait (dies of the SIGTERM of a stop)
  client PATH  connect to the unix socket PATH, print the reply line

Each service notes what it does in the file named by $REAPER_TEST_EVENTS,
one line per event, if that is set.
"""

import os
import signal
import socket
import sys
import time


def event(line):
    path = os.environ.get("REAPER_TEST_EVENTS")
    if not path:
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as f:
        f.write(line + "\n")


def sd_notify(state):
    """sd_notify(0, state): one datagram to $NOTIFY_SOCKET, "@" abstract."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return 0
    if path[0] not in "/@":
        return -1
    if path[0] == "@":
        path = "\0" + path[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        s.sendto(state.encode(), path)
    return 1


def sd_watchdog_enabled():
    """WATCHDOG_USEC when set and WATCHDOG_PID is unset or names us, else 0."""
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return 0
    pid = os.environ.get("WATCHDOG_PID")
    if pid is not None and int(pid) != os.getpid():
        return 0
    return int(usec)


def sd_listen_fds():
    """LISTEN_FDS when LISTEN_PID names us, else 0."""
    pid = os.environ.get("LISTEN_PID")
    if not pid or int(pid) != os.getpid():
        return 0
    return int(os.environ.get("LISTEN_FDS", "0"))


def wait_forever():
    while True:
        signal.pause()


def env(name):
    return "%s=%s" % (name, os.environ.get(name, "(unset)"))


def notify():
    event("up %d" % os.getpid())
    sent = sd_notify("READY=1\nSTATUS=ready")
    event("ready sent=%d %s" % (sent, env("NOTIFY_SOCKET")))
    wait_forever()


def watchdog():
    event("up %d" % os.getpid())
    sd_notify("READY=1")
    usec = sd_watchdog_enabled()
    if not usec:
        event("watchdog disabled pid=%d %s %s" % (os.getpid(), env("WATCHDOG_PID"), env("WATCHDOG_USEC")))
        wait_forever()
    event("watchdog enabled usec=%d" % usec)
    while True:
        sd_notify("WATCHDOG=1")
        time.sleep(usec / 4 / 1e6)


def serve():
    event("up %d" % os.getpid())
    n = sd_listen_fds()
    if n < 1:
        event("no sockets pid=%d %s %s" % (os.getpid(), env("LISTEN_PID"), env("LISTEN_FDS")))
        wait_forever()
    event("listening fds=%d %s" % (n, env("LISTEN_FDNAMES")))
    listener = socket.socket(fileno=3)
    while True:
        conn, _ = listener.accept()
        with conn:
            conn.recv(64)
            conn.sendall(b"pong from %d\n" % os.getpid())
        event("served")


def reload():
    signal.signal(signal.SIGHUP, lambda signum, frame: event("hup"))
    event("up %d" % os.getpid())
    wait_forever()


def stop():
    pid = os.fork()
    if pid == 0:
        os.setsid()
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        os.execvp("sleep", ["sleep", "1001"])
    event("up %d escapee %d" % (os.getpid(), pid))
    wait_forever()


def client(path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(float(os.environ.get("CLIENT_TIMEOUT", "5")))
        s.connect(path)
        s.sendall(b"ping\n")
        reply = b""
        try:
            while not reply.endswith(b"\n"):
                chunk = s.recv(64)
                if not chunk:
                    break
                reply += chunk
        except socket.timeout:
            pass
    print(reply.decode().strip() or "no reply")


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "client":
        client(sys.argv[2])
    else:
        {"notify": notify, "watchdog": watchdog, "socket": serve, "reload": reload, "stop": stop}[mode]()
