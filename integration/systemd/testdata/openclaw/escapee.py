"""The escaped child of testdata/openclaw/escape.cjs: it ignores SIGTERM,
holds 127.0.0.1:18790 when it can (an earlier run's escapee may hold it
still), and waits for ever."""
import signal
import socket

signal.signal(signal.SIGTERM, signal.SIG_IGN)
sock = socket.socket()
try:
    sock.bind(("127.0.0.1", 18790))
    sock.listen()
except OSError:
    pass
while True:
    signal.pause()
