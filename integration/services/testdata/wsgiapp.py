"""A tiny WSGI application for the gunicorn tests (see services_test.go).

GET /slow announces itself on the FIFO $F ("slow PID"), then answers only
once the test writes a line to the FIFO $RELEASE: a request held in flight
for as long as the test wants. Any other path answers at once with the
worker's pid.
"""
import os


def app(environ, start_response):
    if environ.get("PATH_INFO") == "/slow":
        with open(os.environ["F"], "w") as f:
            f.write("slow %d\n" % os.getpid())
        with open(os.environ["RELEASE"]) as r:
            r.readline()
        body = b"slow done\n"
    else:
        body = b"worker %d\n" % os.getpid()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
