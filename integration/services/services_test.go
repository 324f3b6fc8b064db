package services

// Real services, run as their users run them, under reaper as PID 1 and as
// a child, with Debian's tini (tini -s) as the baseline in the same test
// (issue 23): nginx, redis, gunicorn, and a CI job that starts daemons;
// PostgreSQL in postgres_test.go. Each service gets a configuration of the
// test's own, free ports and a directory of its own, and is stopped by the
// test; the harness's cgroup ends whatever a failure leaves.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/reaper-init/reaper/integration/itest"
	"github.com/reaper-init/reaper/signals"
)

// The services' binaries, as Debian installs them (.ci/run).
const (
	tiniPath   = "/usr/bin/tini"
	nginxPath  = "/usr/sbin/nginx"
	redisPath  = "/usr/bin/redis-server"
	redisCLI   = "/usr/bin/redis-cli"
	gunicornPy = "/usr/lib/python3/dist-packages/gunicorn"
)

// runner says how a test runs a service: under reaper or tini, as PID 1
// of a new PID namespace or as a child; or directly, without a shim.
type runner struct {
	shim string // "reaper", "tini", or "" for none
	pid1 bool
}

func (r runner) String() string {
	name := r.shim
	if name == "" {
		name = "direct"
	}
	if r.pid1 {
		return name + "-pid1"
	}
	return name + "-child"
}

// shimRunners are the runs of each service test: reaper and tini, each as
// PID 1 and as a child.
var shimRunners = []runner{{"reaper", true}, {"reaper", false}, {"tini", true}, {"tini", false}}

// eachRunner runs f under each of shimRunners, in parallel subtests.
func eachRunner(t *testing.T, f func(t *testing.T, r runner)) {
	t.Helper()
	itest.RequireRoot(t)
	requireTools(t, tiniPath)
	for _, r := range shimRunners {
		t.Run(r.String(), func(t *testing.T) { t.Parallel(); f(t, r) })
	}
}

// argv is the command line that runs command under r; flags are reaper's
// (it runs with -v, so that a failure shows its account of the stop).
func (r runner) argv(flags []string, command ...string) []string {
	switch r.shim {
	case "reaper":
		return append(append(append([]string{itest.Bin().Reaper, "-v"}, flags...), "--"), command...)
	case "tini":
		return append([]string{tiniPath, "-s", "--"}, command...)
	}
	return command
}

// opts returns the harness's options that run command under r in dir.
func (r runner) opts(dir string, flags []string, command ...string) itest.Opts {
	return itest.Opts{PID1: r.pid1, Dir: dir, Command: r.argv(flags, command...)}
}

// requireTools skips (fails in CI) when a program the test runs is missing.
func requireTools(t testing.TB, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			itest.Skip(t, "no %s (.ci/run installs it from Debian): %v", p, err)
		}
	}
}

// runAs prefixes argv so that it runs as user name, with its groups, as
// the service's own unit or image would run it.
func runAs(name string, argv ...string) []string {
	return append([]string{"setpriv", "--reuid=" + name, "--regid=" + name, "--init-groups"}, argv...)
}

// expectStopped checks that a service's run ended with code, that nothing
// was left, and that nothing needed reaper's SIGKILL.
func expectStopped(t *testing.T, res *itest.Result, code int) {
	t.Helper()
	if res.Status() != code || res.Leftovers() != "" || strings.Contains(res.Stderr, "warning: killed") {
		t.Errorf("exit %d, left %s; want %d, nothing left, nothing killed\n%s", res.Status(), res.Leftovers(), code, res.Stderr)
	}
}

// stdoutLines gives what a service writes to its stdout to the test, line
// by line: set opts.stdout to w, and close w once start has returned.
func stdoutLines(t testing.TB) (l *itest.Lines, w *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	l = itest.NewLines()
	go l.Collect(r)
	return l, w
}

// httpClient opens a connection per request: no idle connection keeps a
// worker that is shutting down busy.
var httpClient = &http.Client{Timeout: itest.Deadline, Transport: &http.Transport{DisableKeepAlives: true}}

// httpGet returns the status and body of GET http://addr/path.
func httpGet(addr, path string) (int, string, error) {
	resp, err := httpClient.Get("http://" + addr + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// response is the end of a request made in the background.
type response struct {
	code int
	body string
	err  error
}

// getLater makes GET http://addr/path in the background.
func getLater(addr, path string) <-chan response {
	done := make(chan response, 1)
	go func() {
		code, body, err := httpGet(addr, path)
		done <- response{code, body, err}
	}()
	return done
}

// ---- nginx -------------------------------------------------------------------

// nginxConf is a configuration of the test's own: two workers, its log on
// stderr at notice level (where nginx names the signals it receives and
// its workers' shutdown), "/" answering with the configuration's
// generation, and "/slow" proxied to upstream.
func nginxConf(dir, addr, upstream string, generation int) string {
	return fmt.Sprintf(`user www-data;
worker_processes 2;
pid %[1]s/nginx.pid;
error_log stderr notice;
events { worker_connections 64; }
http {
	access_log off;
	client_body_temp_path %[1]s/client_body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	server {
		listen %[2]s;
		location / { return 200 "generation %[4]d\n"; }
		location /slow { proxy_pass http://%[3]s; }
	}
}
`, dir, addr, upstream, generation)
}

// slowUpstream is an HTTP server that holds each request until the test
// releases it.
type slowUpstream struct {
	addr    string
	arrived chan struct{}
	release chan struct{}
}

func newSlowUpstream(t *testing.T) *slowUpstream {
	u := &slowUpstream{arrived: make(chan struct{}, 16), release: make(chan struct{})}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.arrived <- struct{}{}
		select {
		case <-u.release:
			fmt.Fprintln(w, "upstream done")
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	u.addr = strings.TrimPrefix(srv.URL, "http://")
	return u
}

// waitArrived waits until the upstream holds a request.
func (u *slowUpstream) waitArrived(t *testing.T) {
	t.Helper()
	select {
	case <-u.arrived:
	case <-time.After(itest.Deadline):
		t.Fatalf("no request reached the upstream within %v", itest.Deadline)
	}
}

var (
	nginxWorkerStarted = regexp.MustCompile(`start worker process \d+`)
	nginxGraceful      = regexp.MustCompile(`gracefully shutting down`)
	nginxGotQuit       = regexp.MustCompile(`signal 3 \(SIGQUIT\) received`)
	nginxGotHup        = regexp.MustCompile(`signal 1 \(SIGHUP\) received`)
)

// startNginx runs nginx under r with a configuration of generation 1,
// and returns once its workers run, with its configuration file and
// address.
func startNginx(t testing.TB, r runner, upstream string) (s *itest.Session, conf, addr string) {
	t.Helper()
	requireTools(t, nginxPath)
	dir, addr := itest.SharedDir(t), itest.FreeAddr(t)
	conf = filepath.Join(dir, "nginx.conf")
	writeFile(t, conf, nginxConf(dir, addr, upstream, 1))
	s = itest.Start(t, r.opts(dir, nil, nginxPath, "-e", "stderr", "-p", dir, "-c", conf, "-g", "daemon off;"))
	s.Stderr.WaitMatches(t, 0, nginxWorkerStarted, 2)
	return s, conf, addr
}

// TestNginx: nginx (Debian's, in the foreground with a configuration of
// the test's own) reloads on SIGHUP and keeps serving, and stops
// gracefully on SIGQUIT, a request in flight answered first; the signals
// reach its master alone (its log names each signal it receives).
func TestNginx(t *testing.T) {
	eachRunner(t, func(t *testing.T, r runner) {
		up := newSlowUpstream(t)
		s, conf, addr := startNginx(t, r, up.addr)
		expectBody(t, addr, "/", "generation 1\n")

		// A reload: the new configuration answers, and every request on
		// the way is answered.
		writeFile(t, conf, nginxConf(filepath.Dir(conf), addr, up.addr, 2))
		s.Signal(syscall.SIGHUP)
		for end := time.Now().Add(itest.Deadline); ; {
			code, body, err := httpGet(addr, "/")
			if err != nil || code != 200 {
				t.Fatalf("during the reload: %d %q %v\n%s", code, body, err, s.Stderr)
			}
			if body == "generation 2\n" {
				break
			}
			if time.Now().After(end) {
				t.Fatalf("still %q %v after SIGHUP\n%s", body, itest.Deadline, s.Stderr)
			}
		}

		// A graceful stop with a request in flight: answered, then exit 0.
		mark := s.Stderr.Mark()
		slow := getLater(addr, "/slow")
		up.waitArrived(t)
		s.Signal(syscall.SIGQUIT)
		s.Stderr.WaitMatches(t, mark, nginxGraceful, 1)
		close(up.release)
		if got := <-slow; got.err != nil || got.code != 200 || got.body != "upstream done\n" {
			t.Errorf("the request in flight at SIGQUIT: %d %q %v, want 200 \"upstream done\"", got.code, got.body, got.err)
		}
		res := s.Wait()
		expectStopped(t, res, 0)
		if quits, hups := s.Stderr.Matching(nginxGotQuit), s.Stderr.Matching(nginxGotHup); quits != 1 || hups != 1 {
			t.Errorf("nginx's processes received SIGQUIT %d times and SIGHUP %d times, want once each (the master)\n%s", quits, hups, res.Stderr)
		}
	})
}

// writeFile writes data to path, or fails the test.
func writeFile(t testing.TB, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// expectBody fails the test unless GET addr/path answers 200 with body.
func expectBody(t *testing.T, addr, path, body string) {
	t.Helper()
	if code, got, err := httpGet(addr, path); err != nil || code != 200 || got != body {
		t.Fatalf("GET %s: %d %q %v, want 200 %q", path, code, got, err, body)
	}
}

// ---- redis -------------------------------------------------------------------

// redisDo sends one command to the redis server at addr and returns its
// first answer line.
func redisDo(t *testing.T, addr string, args ...string) string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, itest.Deadline)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(itest.Deadline))
	req := fmt.Sprintf("*%d\r\n", len(args))
	for _, a := range args {
		req += fmt.Sprintf("$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := conn.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(line)
}

// redisCommand runs Debian's redis-server in the foreground as user
// redis, on addr, its dataset in dir, saving it on exit.
func redisCommand(dir, addr string) []string {
	host, port, _ := net.SplitHostPort(addr)
	return runAs("redis", redisPath, "--port", port, "--bind", host, "--dir", dir, "--save", "3600 1", "--logfile", "")
}

var (
	redisReady = regexp.MustCompile(`Ready to accept connections`)
	redisSaved = regexp.MustCompile(`DB saved on disk`)
	redisBye   = regexp.MustCompile(`Redis is now ready to exit, bye bye`)
)

// startRedis runs redis-server under r, and returns once it is ready,
// with its log (its stdout), its directory and its address.
func startRedis(t testing.TB, r runner) (s *itest.Session, out *itest.Lines, dir, addr string) {
	t.Helper()
	requireTools(t, redisPath)
	dir, addr = itest.SharedDir(t), itest.FreeAddr(t)
	out, w := stdoutLines(t)
	o := r.opts(dir, nil, redisCommand(dir, addr)...)
	o.Stdout = w
	s = itest.Start(t, o)
	w.Close()
	out.WaitFor(t, redisReady)
	return s, out, dir, addr
}

// TestRedis: redis-server on SIGTERM saves its dataset and exits 0.
func TestRedis(t *testing.T) {
	eachRunner(t, func(t *testing.T, r runner) {
		s, out, dir, addr := startRedis(t, r)
		if got := redisDo(t, addr, "SET", "key", "value"); got != "+OK" {
			t.Fatalf("SET: %q", got)
		}
		s.Signal(syscall.SIGTERM)
		res := s.Wait()
		expectStopped(t, res, 0)
		select {
		case <-out.Closed: // redis's last lines are in
		case <-time.After(itest.Deadline):
			t.Fatalf("redis's stdout still open %v after its exit", itest.Deadline)
		}
		if out.Matching(redisSaved) != 1 || out.Matching(redisBye) != 1 {
			t.Errorf("redis did not save and say goodbye:\n%s", out)
		}
		if _, err := os.Stat(filepath.Join(dir, "dump.rdb")); err != nil {
			t.Errorf("no dataset saved: %v", err)
		}
	})
}

// ---- gunicorn ----------------------------------------------------------------

var (
	gunicornBooting = regexp.MustCompile(`Booting worker with pid`)
	gunicornExiting = regexp.MustCompile(`Worker exiting \(pid|was terminated due to signal`)
	gunicornHup     = regexp.MustCompile(`Handling signal: hup`)
)

// gunicorn is a run of Debian's gunicorn (python3-gunicorn) serving
// testdata/wsgiapp.py with two sync workers.
type gunicorn struct {
	*itest.Session
	addr    string
	events  *itest.FIFO // "slow PID" when a slow request arrives
	release *itest.FIFO // a line written here answers it
}

func startGunicorn(t testing.TB, r runner, flags ...string) *gunicorn {
	t.Helper()
	const python = "/usr/bin/python3" // Debian's, which has python3-gunicorn
	requireTools(t, python, gunicornPy)
	app, err := filepath.Abs("testdata")
	if err != nil {
		t.Fatal(err)
	}
	g := &gunicorn{addr: itest.FreeAddr(t), events: itest.NewFIFO(t, "events"), release: itest.NewFIFO(t, "release")}
	o := r.opts(itest.SharedDir(t), flags, python, "-m", "gunicorn", "--workers", "2", "--bind", g.addr,
		"--graceful-timeout", "1", "--chdir", app, "wsgiapp:app")
	o.Env = []string{"F=" + g.events.Path, "RELEASE=" + g.release.Path}
	g.Session = itest.Start(t, o)
	g.Stderr.WaitMatches(t, 0, gunicornBooting, 2)
	return g
}

// master returns the pid of gunicorn's master, as the test sees it.
func (g *gunicorn) master(t testing.TB) int {
	t.Helper()
	master := itest.FirstBelow(g.Child, func(pid int) bool {
		cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		return strings.HasPrefix(string(cmd), "/usr/bin/python3\x00-m\x00gunicorn\x00")
	})
	if master == 0 {
		t.Fatalf("no gunicorn master below %d", g.Child)
	}
	return master
}

// waitWorkers waits until master has n children. The kernel tells nobody
// when a process forks: this looks at /proc until then, within the
// deadline.
func waitWorkers(t *testing.T, master, n int) {
	t.Helper()
	for end := time.Now().Add(itest.Deadline); len(itest.ChildrenOf(master)) != n; {
		if time.Now().After(end) {
			t.Fatalf("gunicorn's master has %d workers, want %d", len(itest.ChildrenOf(master)), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestGunicorn: gunicorn's own signals work as without a shim: TTIN and
// TTOU change the number of workers, a HUP replaces the workers without
// cutting the request in flight (a reload that reached the workers too
// would kill them: they leave SIGHUP at its default), and a TERM right
// after a HUP stops gunicorn, exit 0: the TERM reaches the master alone,
// as the reload did. (gunicorn 20.1 has a race of its own there: a worker
// the reload forks just before the TERM misses the master's SIGTERM, and
// the master waits its graceful timeout, then SIGKILLs it, under any shim
// or none. Its graceful timeout is 1 s here, below reaper's default 5 s;
// gunicorn's default is 30 s, which wants a --grace above it outside a
// manager. Sent to the group, as --forward=group does, the TERM kills the
// workers the reload just started, the master starts others that miss
// its TERM, and the stop often outlives the 5 s.)
func TestGunicorn(t *testing.T) {
	eachRunner(t, func(t *testing.T, r runner) {
		g := startGunicorn(t, r)
		master := g.master(t)
		waitWorkers(t, master, 2)
		for _, step := range []struct {
			sig  syscall.Signal
			want int
		}{{syscall.SIGTTIN, 3}, {syscall.SIGTTOU, 2}} {
			g.Signal(step.sig)
			if r.shim == "tini" {
				// Measured, not judged: tini ignores SIGTTIN and SIGTTOU
				// rather than forwarding them.
				time.Sleep(time.Second)
				t.Logf("tini: %d workers a second after %s", len(itest.ChildrenOf(master)), signals.Name(step.sig))
				continue
			}
			waitWorkers(t, master, step.want)
		}

		mark := g.Stderr.Mark()
		slow := getLater(g.addr, "/slow")
		g.events.Next(t)
		g.Signal(syscall.SIGHUP)
		g.Stderr.WaitMatches(t, mark, gunicornBooting, 2) // the new workers
		g.Stderr.WaitMatches(t, mark, gunicornExiting, 1) // an old one, stopped with the slow one
		if _, err := g.release.File.WriteString("go\n"); err != nil {
			t.Fatal(err)
		}
		if got := <-slow; got.err != nil || got.code != 200 || got.body != "slow done\n" {
			t.Errorf("the request in flight at SIGHUP: %d %q %v, want 200 \"slow done\"\n%s", got.code, got.body, got.err, g.Stderr)
		}

		mark = g.Stderr.Mark()
		g.Signal(syscall.SIGHUP)
		g.Stderr.WaitMatches(t, mark, gunicornHup, 1)
		g.Signal(syscall.SIGTERM)
		expectStopped(t, g.Wait(), 0)
	})
}

// ---- a CI job that starts daemons ----------------------------------------------

// ciJob starts PostgreSQL with pg_ctl and a daemonized redis, uses both,
// and exits 3 (a failing test step), leaving both running.
const ciJob = `set -e
setpriv --reuid=postgres --regid=postgres --init-groups "$PGBIN/pg_ctl" start -w -D "$PGDATA" -l "$DIR/postgres.log" \
	-o "-p $PGPORT -k $DIR -h 127.0.0.1"
redis-server --daemonize yes --port "$REDISPORT" --bind 127.0.0.1 --dir "$DIR" --logfile "$DIR/redis.log" --pidfile "$DIR/redis.pid"
until redis-cli -p "$REDISPORT" ping >/dev/null 2>&1; do sleep 0.05; done
redis-cli -p "$REDISPORT" set key value >/dev/null
setpriv --reuid=postgres --regid=postgres --init-groups "$PGBIN/psql" -X -h "$DIR" -p "$PGPORT" -U postgres -Atc 'select 1' >/dev/null
exit 3
`

// TestCIJobStartingDaemons: a CI job that starts its own database and
// cache as daemons and fails. Under reaper both shut down cleanly (their
// logs say so) and the job keeps its status. Under tini they are left
// running (as a child) or SIGKILLed with the namespace (as PID 1): that is
// measured and logged, not judged.
func TestCIJobStartingDaemons(t *testing.T) {
	requireTools(t, redisPath, redisCLI)
	eachRunner(t, func(t *testing.T, r runner) {
		dir := itest.SharedDir(t)
		data := pgCluster(t, dir)
		o := r.opts(dir, nil, "sh", "-c", ciJob)
		o.Env = []string{"PGBIN=" + pgBin, "PGDATA=" + data, "DIR=" + dir,
			"PGPORT=" + itest.PortOf(itest.FreeAddr(t)), "REDISPORT=" + itest.PortOf(itest.FreeAddr(t))}
		res := itest.Start(t, o).Wait()
		pgLog, redisLog := readLog(t, dir, "postgres.log"), readLog(t, dir, "redis.log")
		pgClean := pgShutDown.MatchString(pgLog) && pgSmart.MatchString(pgLog)
		redisClean := redisSaved.MatchString(redisLog) && redisBye.MatchString(redisLog)
		if r.shim != "reaper" {
			t.Logf("%v: job status %d; left running %q; postgres shut down cleanly: %v; redis saved and exited: %v",
				r, res.Status(), res.Survivors, pgClean, redisClean)
			if res.Status() != 3 {
				t.Errorf("job status %d, want 3", res.Status())
			}
			return
		}
		expectStopped(t, res, 3)
		if !pgClean || !redisClean {
			t.Errorf("postgres shut down cleanly: %v; redis saved and exited: %v\npostgres:\n%s\nredis:\n%s", pgClean, redisClean, pgLog, redisLog)
		}
	})
}

// readLog returns the file name in dir, "" when it is missing.
func readLog(t *testing.T, dir, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(data)
}

// withDeadline returns a context that ends with the test or after the
// deadline.
func withDeadline(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), itest.Deadline)
	t.Cleanup(cancel)
	return ctx
}
