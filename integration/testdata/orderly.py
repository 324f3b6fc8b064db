"""A service with an orderly stop, for the stop-order tests.

On SIGTERM it drains for $DRAIN seconds, then stops its worker (a process
in a session of its own) and waits for it, then exits 0. The worker notes
who sent it SIGTERM (siginfo's si_pid) and exits 0. An escapee the service
does not manage (setsid, it exits on SIGTERM) notes its SIGTERM's sender
too. Each announces itself on $F (a FIFO, or a file it appends to):
"command PID", "worker PID", "escapee PID", then "term WHO FROM" for each
SIGTERM received.
"""
import os
import signal
import subprocess
import sys
import time

F = os.environ["F"]
DRAIN = float(os.environ.get("DRAIN", "0"))


def note(line):
    with open(F, "a") as f:
        f.write(line + "\n")


def wait_for_term(who):
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
    note("%s %d" % (who, os.getpid()))
    info = signal.sigwaitinfo([signal.SIGTERM])
    note("term %s %d" % (who, info.si_pid))
    sys.exit(0)


if len(sys.argv) > 1:
    wait_for_term(sys.argv[1])

signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
worker = subprocess.Popen([sys.executable, __file__, "worker"], start_new_session=True)
escapee = subprocess.Popen([sys.executable, __file__, "escapee"], start_new_session=True)
note("command %d" % os.getpid())
info = signal.sigwaitinfo([signal.SIGTERM])
note("term command %d" % info.si_pid)
time.sleep(DRAIN)
worker.send_signal(signal.SIGTERM)
worker.wait()
sys.exit(0)
