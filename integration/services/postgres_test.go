package services

// PostgreSQL 15, Debian's, as its users run it in a container or a unit:
// `postgres -D DIR` in the foreground as user postgres. Its children (the
// backends, the checkpointer, the archiver) each run in a session of
// their own, and it stops them itself, in its own order: smart on
// SIGTERM, fast on SIGINT, immediate on SIGQUIT (see docs/stopping.md).

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/reaper-init/reaper/integration/itest"
)

// pgBin holds Debian's PostgreSQL 15 programs.
const pgBin = "/usr/lib/postgresql/15/bin"

var (
	pgReady     = regexp.MustCompile(`database system is ready to accept connections`)
	pgShutDown  = regexp.MustCompile(`database system is shut down`)
	pgSmart     = regexp.MustCompile(`received smart shutdown request`)
	pgCut       = regexp.MustCompile(`terminating connection due to administrator command`)
	pgRecovery  = regexp.MustCompile(`was not properly shut down|automatic recovery`)
	pgCleanOpen = regexp.MustCompile(`database system was shut down at`)
)

// pgTemplate is a cluster made once by initdb; each test copies it.
var pgTemplate struct {
	once sync.Once
	dir  string
	err  error
}

// pgCluster returns a fresh cluster in dir/data, owned by postgres.
func pgCluster(t testing.TB, dir string) string {
	t.Helper()
	itest.RequireRoot(t)
	requireTools(t, pgBin+"/initdb", pgBin+"/postgres", pgBin+"/pg_ctl", pgBin+"/psql")
	pgTemplate.once.Do(func() {
		// Beside the binaries: TestMain removes it with them.
		base := filepath.Join(filepath.Dir(itest.Bin().Reaper), "postgres")
		pgTemplate.dir = filepath.Join(base, "data")
		pgTemplate.err = initdb(base)
	})
	if pgTemplate.err != nil {
		t.Fatal(pgTemplate.err)
	}
	data := filepath.Join(dir, "data")
	if out, err := exec.CommandContext(withDeadline(t), "cp", "-a", pgTemplate.dir, data).CombinedOutput(); err != nil {
		t.Fatalf("copying the cluster: %v\n%s", err, out)
	}
	return data
}

// initdb makes a cluster in base/data, as user postgres.
func initdb(base string) error {
	u, err := user.Lookup("postgres")
	if err != nil {
		return err
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Mkdir(base, 0o755); err != nil {
		return err
	}
	if err := os.Chown(base, uid, gid); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	argv := runAs("postgres", pgBin+"/initdb", "-D", base+"/data", "-A", "trust", "-N")
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = "/"
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb: %v\n%s", err, out)
	}
	return nil
}

// pgCommand runs the cluster data in the foreground as user postgres, on
// 127.0.0.1:port and a socket in dir, with extra settings.
func pgCommand(dir, data, port string, settings ...string) []string {
	argv := runAs("postgres", pgBin+"/postgres", "-D", data, "-p", port, "-k", dir, "-h", "127.0.0.1")
	for _, s := range settings {
		argv = append(argv, "-c", s)
	}
	return argv
}

// postgres is a run of postgres under a runner.
type postgres struct {
	s               *itest.Session
	dir, data, port string
}

// startPostgres runs a fresh cluster under r (the whole command line
// prefixed by wrap, reaper given flags) with settings, and returns once it
// accepts connections.
func startPostgres(t testing.TB, r runner, wrap, flags []string, settings ...string) *postgres {
	t.Helper()
	pg := &postgres{dir: itest.SharedDir(t), port: itest.PortOf(itest.FreeAddr(t))}
	pg.data = pgCluster(t, pg.dir)
	o := r.opts(pg.dir, flags, pgCommand(pg.dir, pg.data, pg.port, settings...)...)
	o.Command = append(wrap, o.Command...)
	pg.s = itest.Start(t, o)
	pg.s.Stderr.WaitFor(t, pgReady)
	return pg
}

// pgClient is a psql session, as user postgres.
type pgClient struct {
	cmd  *exec.Cmd
	out  bytes.Buffer
	done chan error
}

// pgSession connects a psql session to the server listening in dir on
// port, and returns once it is connected; the session then runs query and
// ends.
func pgSession(t *testing.T, dir, port, query string) *pgClient {
	t.Helper()
	connected := itest.NewFIFO(t, "connected")
	c := &pgClient{done: make(chan error, 1)}
	c.cmd = commandAs(t, "postgres", pgBin+"/psql", "-X", "-v", "ON_ERROR_STOP=1", "-h", dir, "-p", port, "-U", "postgres", "-d", "postgres")
	c.cmd.Dir = dir
	c.cmd.Stdin = strings.NewReader(fmt.Sprintf("\\! echo connected > %s\n%s\n", connected.Path, query))
	c.cmd.Stdout, c.cmd.Stderr = &c.out, &c.out
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.done <- c.cmd.Wait() }()
	if line := connected.Next(t); line != "connected" {
		t.Fatalf("psql: %q", line)
	}
	return c
}

// wait returns psql's exit code and what it wrote.
func (c *pgClient) wait() (int, string) {
	err := <-c.done
	code, _ := itest.ShellStatus(err)
	return code, c.out.String()
}

// commandAs is a command that runs argv as user name, within the deadline.
func commandAs(t *testing.T, name string, argv ...string) *exec.Cmd {
	argv = runAs(name, argv...)
	return exec.CommandContext(withDeadline(t), argv[0], argv[1:]...)
}

// pgQuery runs a query string and returns the unaligned result of its
// last statement.
func pgQuery(t *testing.T, dir, port, query string) string {
	t.Helper()
	cmd := commandAs(t, "postgres", pgBin+"/psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", dir, "-p", port, "-U", "postgres", "-d", "postgres", "-c", query)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("psql -c %q: %v\n%s", query, err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1]
}

// pgStop is one stop: postgres under r with a client session open, sig to
// the shim (or, with background, to the shim run as a script's background
// job, with SIGINT and SIGQUIT ignored by its caller), and what postgres's
// log and the shim's status say.
type pgStop struct {
	sig        syscall.Signal
	kind       string // smart, fast, immediate
	background bool
}

func (c pgStop) run(t *testing.T, r runner) {
	var wrap []string
	if c.background {
		wrap = []string{"sh", "-c", `"$@" & wait $!`, "sh"}
	}
	pg := startPostgres(t, r, wrap, nil)
	s, dir, data, port := pg.s, pg.dir, pg.data, pg.port
	session := pgSession(t, dir, port, "select pg_sleep(1.5);")
	target := s.ReaperPID()
	if c.background {
		kids := itest.ChildrenOf(s.Child)
		if len(kids) != 1 {
			t.Fatalf("the script (pid %d) has children %v, want the shim alone", s.Child, kids)
		}
		target = kids[0]
	}
	if err := syscall.Kill(target, c.sig); err != nil {
		t.Fatal(err)
	}
	res := s.Wait()
	code, out := session.wait()
	expectStopped(t, res, 0)
	if !regexp.MustCompile(`received `+c.kind+` shutdown request`).MatchString(res.Stderr) || !pgShutDown.MatchString(res.Stderr) {
		t.Errorf("no %s shutdown in postgres's log:\n%s", c.kind, res.Stderr)
	}
	if c.kind == "smart" && (code != 0 || !strings.Contains(out, "(1 row)") || pgCut.MatchString(out) || pgCut.MatchString(res.Stderr)) {
		t.Errorf("a smart shutdown cut the session: psql exit %d:\n%s\npostgres:\n%s", code, out, res.Stderr)
	}
	if c.kind != "immediate" {
		pgStartsClean(t, dir, data, port)
	}
}

// pgStartsClean starts the cluster again, without a shim, and checks that
// it does no crash recovery: it was shut down cleanly.
func pgStartsClean(t *testing.T, dir, data, port string) {
	t.Helper()
	s := itest.Start(t, runner{}.opts(dir, nil, pgCommand(dir, data, port)...))
	seen := strings.Join(s.Stderr.WaitFor(t, pgReady), "\n")
	if pgRecovery.MatchString(seen) || !pgCleanOpen.MatchString(seen) {
		t.Errorf("the next start recovered from a crash:\n%s", seen)
	}
	s.Signal(syscall.SIGINT)
	expectStopped(t, s.Wait(), 0)
}

// TestPostgresStops: SIGTERM, SIGINT and SIGQUIT give PostgreSQL's smart
// (the open session ends on its own, not cut), fast and immediate
// shutdowns, under reaper and under tini, as PID 1 and as a child; the
// shim exits with postgres's status, nothing is left, and after a smart or
// a fast shutdown the next start does no crash recovery. Also when the
// shim is a script's background job (sh leaves SIGINT ignored for it): the
// SIGINT still reaches postgres.
func TestPostgresStops(t *testing.T) {
	for _, c := range []pgStop{{syscall.SIGTERM, "smart", false}, {syscall.SIGINT, "fast", false}, {syscall.SIGQUIT, "immediate", false}} {
		t.Run(c.kind, func(t *testing.T) {
			t.Parallel()
			eachRunner(t, c.run)
		})
	}
	t.Run("background-job", func(t *testing.T) {
		t.Parallel()
		for _, r := range []runner{{"reaper", false}, {"tini", false}} {
			t.Run(r.String(), func(t *testing.T) {
				t.Parallel()
				requireTools(t, tiniPath)
				pgStop{syscall.SIGINT, "fast", true}.run(t, r)
			})
		}
	})
}

// TestPostgresArchivesTheLastSegment: with WAL archiving whose command
// takes 8 s, a stop while the archive command runs the segment just
// switched still archives it, and then the last one (at shutdown postgres
// switches once more and waits for its archiver): nothing cuts the
// archiver's command. As PID 1 reaper gives the stop the engine's time; as
// a child its default 5 s are too short, and --grace=30s covers the two
// runs of 8 s (docs/stopping.md). The four runs overlap: each stop takes
// about 16 s, mostly waiting.
func TestPostgresArchivesTheLastSegment(t *testing.T) {
	t.Parallel()
	itest.RequireRoot(t)
	requireTools(t, tiniPath)
	var runs []*pgArchiving
	for _, r := range shimRunners {
		runs = append(runs, startArchiving(t, r))
	}
	for _, a := range runs {
		a.check(t)
	}
}

// pgArchiving is a run of postgres with a slow archive command, stopped
// while the command runs.
type pgArchiving struct {
	r                      runner
	s                      *itest.Session
	data, archive, segment string
}

// startArchiving starts postgres under r, switches to a new WAL segment,
// and sends SIGTERM once the archive command has started on the segment
// switched.
func startArchiving(t *testing.T, r runner) *pgArchiving {
	t.Helper()
	a := &pgArchiving{r: r, archive: itest.SharedDir(t)}
	archiving := itest.NewFIFO(t, "archiving")
	var flags []string
	if r.shim == "reaper" && !r.pid1 {
		flags = []string{"--grace=30s"}
	}
	pg := startPostgres(t, r, nil, flags, "archive_mode=on",
		fmt.Sprintf("archive_command=echo %%f > %s && sleep 8 && cp %%p %s/%%f", archiving.Path, a.archive))
	a.s, a.data = pg.s, pg.data
	a.segment = pgQuery(t, pg.dir, pg.port, "create table t (i int); insert into t values (1); select pg_walfile_name(pg_switch_wal())")
	if got := archiving.Next(t); got != a.segment {
		t.Fatalf("%v: archiving %q, want the segment switched, %q", r, got, a.segment)
	}
	a.s.Signal(syscall.SIGTERM)
	return a
}

// check waits for the run's end: postgres shut down cleanly, the segment
// switched is archived, and no segment is left waiting to be.
func (a *pgArchiving) check(t *testing.T) {
	t.Helper()
	res := a.s.Wait()
	if res.Status() != 0 || res.Leftovers() != "" || strings.Contains(res.Stderr, "warning: killed") || !pgShutDown.MatchString(res.Stderr) {
		t.Errorf("%v: exit %d, left %s; want 0, nothing left, nothing killed, postgres shut down\n%s", a.r, res.Status(), res.Leftovers(), res.Stderr)
	}
	if _, err := os.Stat(filepath.Join(a.archive, a.segment)); err != nil {
		t.Errorf("%v: the segment switched was not archived: %v", a.r, err)
	}
	ready, _ := filepath.Glob(filepath.Join(a.data, "pg_wal", "archive_status", "*.ready"))
	if len(ready) > 0 {
		t.Errorf("%v: segments left unarchived: %v\n%s", a.r, ready, res.Stderr)
	}
}
