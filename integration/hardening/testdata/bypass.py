"""Payload of TestNotifyRelayBypass: a service that tries to name another
unit's process its main pid through $NOTIFY_SOCKET.

bypass.py FORM PIDFILE sends one datagram of form FORM naming the pid in
PIDFILE, with READY=1 in it (so that systemctl start returns once systemd
has read it), then waits for a stop. unprivileged sends it from a child
that dropped to user nobody first, and stays until the stop.
"""

import os
import socket
import sys
import time

FORMS = {
    # systemd splits lines at '\r' too.
    "cr-after": b"READY=1\rMAINPID=%d",
    "cr-before": b"MAINPID=%d\rREADY=1",
    # The text ends at the first NUL (systemd 252 ignores a datagram with
    # a NUL before its last byte).
    "nul": b"READY=1\x00MAINPID=%d",
    # A backslash is dropped, the byte after it kept: systemd reads
    # MAINPID=; a single trailing NUL is allowed.
    "escaped": b"READY=1\n\\MAINPID=%d\x00",
    # systemd 254 and later: let any process notify.
    "notifyaccess": b"NOTIFYACCESS=all\nREADY=1\nX_VICTIM=%d",
    "unprivileged": b"READY=1\rMAINPID=%d",
}


def send(data):
    path = os.environ["NOTIFY_SOCKET"]
    if path[0] == "@":
        path = "\0" + path[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(data, path)


def main():
    form, pidfile = sys.argv[1], sys.argv[2]
    with open(pidfile) as f:
        data = FORMS[form] % int(f.read())
    if form == "unprivileged":
        if os.fork() == 0:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            send(data)
            while True:
                time.sleep(3600)
    else:
        send(data)
    while True:
        time.sleep(3600)


main()
