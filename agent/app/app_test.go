package app_test

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/galaxy/rtmanager/agent/app"
	"github.com/galaxy/rtmanager/agent/config"
	"github.com/galaxy/rtmanager/agent/leader"
	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/domain/job"
	"github.com/galaxy/rtmanager/internal/domain/runtime"
	"github.com/galaxy/rtmanager/internal/pgcluster"
	"github.com/galaxy/rtmanager/internal/testutil/dockertest"
	"github.com/galaxy/rtmanager/internal/testutil/pgtest"
	"github.com/galaxy/rtmanager/internal/testutil/wait"
)

// The tests run real agents: the test binary re-executed, told so by
// childEnv, runs app.Run with the RTM_* settings of its environment.
const childEnv = "RTM_APP_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(runChild())
	}
	pgtest.Main(m)
}

func runChild() int {
	var cfg config.Config
	fs := flag.NewFlagSet("child", flag.ContinueOnError)
	check := cfg.Set(fs, config.Database, config.Agent, config.Logging)
	if err := fs.Parse(nil); err != nil {
		return 2
	}
	if err := check(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx, stop := signalContext()
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if err := app.Run(ctx, &cfg, log, "test"); err != nil {
		fmt.Fprintln(os.Stderr, "agent:", err)
		return 1
	}
	return 0
}

// agent is one agent process.
type agent struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
}

func (a *agent) Write(p []byte) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.out.Write(p)
}

func (a *agent) log() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.out.String()
}

// id is the agent id the process registers with (app.newAgentID).
func (a *agent) idPrefix(hostID string) string {
	return leader.AgentIDPrefix(hostID, a.cmd.Process.Pid)
}

func (a *agent) signal(sig syscall.Signal) {
	_ = a.cmd.Process.Signal(sig)
	select {
	case <-a.done:
	case <-time.After(time.Minute):
		a.t.Errorf("agent %s did not exit after %v", a.name, sig)
		_ = a.cmd.Process.Kill()
		<-a.done
	}
}

// env is the settings of the agents of one test.
type env struct {
	t      *testing.T
	hostID string
	dbURL  string
	store  *db.Store
	image  string
	suffix string
	vars   map[string]string
}

func newEnv(t *testing.T, dbURL string) *env {
	t.Helper()
	e := &env{t: t, hostID: dockertest.UniqueName(t), dbURL: dbURL, image: dockertest.EngineImage(t)}
	// Container names are global on the daemon: games are unique per test.
	e.suffix = e.hostID[strings.LastIndex(e.hostID, "-")+1:]
	dockertest.Engine(t, e.hostID) // removes the host's containers at cleanup
	pool, err := db.Connect(context.Background(), dbURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	e.store = db.NewStore(pool, nil)
	e.vars = map[string]string{
		"RTM_DATABASE_URL":        dbURL,
		"RTM_HOST_ID":             e.hostID,
		"RTM_DOCKER_NETWORK":      "net-" + e.hostID,
		"RTM_STATE_ROOT":          t.TempDir(),
		"RTM_ALLOWED_IMAGES":      dockertest.ImageRepo,
		"RTM_HTTP_ADDR":           "127.0.0.1:0",
		"RTM_HOST_LEASE_TTL":      "3s",
		"RTM_HOST_LEASE_POLL":     "250ms",
		"RTM_LEASE_DURATION":      "3s",
		"RTM_POLL_INTERVAL":       "200ms",
		"RTM_DRAIN_TIMEOUT":       "5s",
		"RTM_EVENTS_IDLE_TIMEOUT": "2s",
		"RTM_LOG_LEVEL":           "debug",
	}
	return e
}

func (e *env) start(name string) *agent {
	e.t.Helper()
	bin, err := os.Executable()
	if err != nil {
		e.t.Fatal(err)
	}
	a := &agent{t: e.t, name: name, done: make(chan struct{})}
	a.cmd = exec.Command(bin, "-test.run=^$")
	a.cmd.Env = append(os.Environ(), childEnv+"=1")
	for k, v := range e.vars {
		a.cmd.Env = append(a.cmd.Env, k+"="+v)
	}
	a.cmd.Stdout, a.cmd.Stderr = a, a
	if err := a.cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	go func() { _ = a.cmd.Wait(); close(a.done) }()
	e.t.Cleanup(func() {
		select {
		case <-a.done:
		default:
			a.signal(syscall.SIGTERM)
		}
		if e.t.Failed() {
			e.t.Logf("log of agent %s:\n%s", name, a.log())
		}
	})
	return a
}

func (e *env) host() db.Host {
	h, err := e.store.GetHost(context.Background(), e.hostID)
	if err != nil {
		e.t.Fatal(err)
	}
	return h
}

func (e *env) holder() string {
	h, err := e.store.GetHost(context.Background(), e.hostID)
	if err != nil {
		return ""
	}
	return h.AgentID
}

// game names a game of this test.
func (e *env) game(name string) string { return name + "-" + e.suffix }

func (e *env) enqueue(game string, kind job.Kind, payload string) int64 {
	e.t.Helper()
	game = e.game(game)
	j, _, err := e.store.InsertJob(context.Background(), db.NewJob{HostID: e.hostID, GameID: game, Kind: kind, Payload: []byte(payload)})
	if err != nil {
		e.t.Fatal(err)
	}
	return j.ID
}

func (e *env) waitJob(id int64, timeout time.Duration) db.Job {
	e.t.Helper()
	var j db.Job
	wait.For(e.t, timeout, fmt.Sprintf("job %d to finish", id), func() bool {
		var err error
		j, err = e.store.GetJob(context.Background(), id)
		return err == nil && j.FinishedAt != nil
	})
	if j.Status != job.StatusSucceeded {
		e.t.Fatalf("job %d: %+v, want succeeded", id, j)
	}
	return j
}

func (e *env) waitRecord(game string, status runtime.Status, timeout time.Duration) runtime.RuntimeRecord {
	e.t.Helper()
	game = e.game(game)
	var rec runtime.RuntimeRecord
	wait.For(e.t, timeout, fmt.Sprintf("game %s to be %s", game, status), func() bool {
		var err error
		rec, err = e.store.GetRecord(context.Background(), game)
		return err == nil && rec.Status == status
	})
	return rec
}

func (e *env) count(query string, args ...any) int {
	e.t.Helper()
	var n int
	if err := e.store.Pool().QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// kill stops a game's container behind the agent's back, through Docker.
func (e *env) kill(containerID string) {
	e.t.Helper()
	cli := dockertest.Client(e.t)
	if _, err := cli.ContainerKill(context.Background(), containerID, client.ContainerKillOptions{Signal: "SIGKILL"}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) startPayload() string {
	return fmt.Sprintf(`{"image_ref": %q}`, e.image)
}

// TestStandbyTakesOverAfterSIGKILL: a second agent for a host stands by
// while the first lives, never working; when the first is killed it takes
// over within the lease's bound, resumes from the stored cursor (a
// container killed meanwhile is recorded stopped), runs the jobs queued
// meanwhile, and nothing runs twice.
func TestStandbyTakesOverAfterSIGKILL(t *testing.T) {
	t.Parallel()
	e := newEnv(t, pgtest.URL(t))
	a := e.start("a")
	wait.For(t, time.Minute, "agent a active", func() bool { return strings.HasPrefix(e.holder(), a.idPrefix(e.hostID)) })
	start1 := e.enqueue("g1", job.KindStart, e.startPayload())
	start2 := e.enqueue("g2", job.KindStart, e.startPayload())
	e.waitJob(start1, 2*time.Minute)
	e.waitJob(start2, 2*time.Minute)

	b := e.start("b")
	wait.For(t, time.Minute, "agent b standing by", func() bool { return strings.Contains(b.log(), "standing by") })
	// While a renews (heartbeat_at moves on twice), b stays out.
	first := e.host().HeartbeatAt
	wait.For(t, time.Minute, "two renewals of a", func() bool {
		h := e.host()
		return h.HeartbeatAt.Sub(first) >= 2*time.Second
	})
	if holder := e.holder(); !strings.HasPrefix(holder, a.idPrefix(e.hostID)) {
		t.Fatalf("lease holder %s while a lives, want a", holder)
	}
	if strings.Contains(b.log(), "lease acquired") || strings.Contains(b.log(), "job worker started") {
		t.Fatalf("b became active while a lived:\n%s", b.log())
	}

	g2 := e.waitRecord("g2", runtime.StatusRunning, time.Minute)
	killed := time.Now()
	a.signal(syscall.SIGKILL)
	// Meanwhile, with no live agent: a job is queued and a container dies.
	stop1 := e.enqueue("g1", job.KindStop, `{"timeout_seconds": 1}`)
	e.kill(g2.CurrentContainerID)

	wait.For(t, time.Minute, "agent b active", func() bool { return strings.HasPrefix(e.holder(), b.idPrefix(e.hostID)) })
	t.Logf("handover after SIGKILL: %s (bound: ttl 3s + poll 250ms)", time.Since(killed).Round(10*time.Millisecond))
	e.waitJob(stop1, 2*time.Minute)
	e.waitRecord("g1", runtime.StatusStopped, time.Minute)
	e.waitRecord("g2", runtime.StatusStopped, time.Minute)

	// Nothing ran twice: one outcome per job, one start per game.
	for _, id := range []int64{start1, start2, stop1} {
		if n := e.count(`SELECT count(*) FROM outbox WHERE job_id = $1 AND type LIKE 'job.%'`, id); n != 1 {
			t.Errorf("job %d: %d outcome events, want 1", id, n)
		}
	}
	for _, g := range []string{"g1", "g2"} {
		if n := e.count(`SELECT count(*) FROM outbox WHERE game_id = $1 AND type = 'runtime.running'`, e.game(g)); n != 1 {
			t.Errorf("game %s: %d runtime.running events, want 1", g, n)
		}
		if n := e.count(`SELECT count(*) FROM outbox WHERE game_id = $1 AND type = 'runtime.stopped'`, e.game(g)); n != 1 {
			t.Errorf("game %s: %d runtime.stopped events, want 1", g, n)
		}
	}
	b.signal(syscall.SIGTERM)
	if e.holder() == "" || e.host().HostID == "" {
		t.Fatal("host row gone")
	}
	if n := e.count(`SELECT count(*) FROM hosts WHERE host_id = $1 AND lease_expires_at IS NULL`, e.hostID); n != 1 {
		t.Fatalf("b did not release the lease at SIGTERM")
	}
}

// TestPostgresRestart: the agent outlives a restart of PostgreSQL (a
// dedicated cluster), and a container that dies while the database is
// down is recorded once it is back.
func TestPostgresRestart(t *testing.T) {
	t.Parallel()
	dir, err := os.MkdirTemp("", "rtm-app-pgrestart-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	opts := pgcluster.Options{DataDir: dir, Settings: map[string]string{"fsync": "off"}}
	cluster, err := pgcluster.Start(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = cluster.Stop()
		}
	})
	e := newEnv(t, cluster.URL("postgres"))
	a := e.start("a")
	wait.For(t, time.Minute, "agent active", func() bool { return strings.HasPrefix(e.holder(), a.idPrefix(e.hostID)) })
	id := e.enqueue("g1", job.KindStart, e.startPayload())
	e.waitJob(id, 2*time.Minute)
	rec := e.waitRecord("g1", runtime.StatusRunning, time.Minute)

	e.store.Pool().Reset()
	if err := cluster.Stop(); err != nil {
		t.Fatal(err)
	}
	stopped = true
	e.kill(rec.CurrentContainerID)
	if cluster, err = pgcluster.Start(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
	stopped = false

	e.waitRecord("g1", runtime.StatusStopped, 2*time.Minute)
	// And jobs run again.
	id = e.enqueue("g2", job.KindStart, e.startPayload())
	e.waitJob(id, 2*time.Minute)
	if n := e.count(`SELECT count(*) FROM outbox WHERE game_id = $1 AND type = 'runtime.stopped'`, e.game("g1")); n != 1 {
		t.Fatalf("%d runtime.stopped events, want 1", n)
	}
	a.signal(syscall.SIGTERM)
}

// TestTransactionPoolerMode runs the agent through a real PgBouncer in
// transaction mode: polling only, no server-side prepared statements,
// migrations on the direct URL.
func TestTransactionPoolerMode(t *testing.T) {
	t.Parallel()
	bin, err := exec.LookPath("pgbouncer")
	if err != nil {
		bin, err = exec.LookPath("/usr/sbin/pgbouncer")
	}
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("pgbouncer not installed (.ci/run installs it): %v", err)
		}
		t.Skip("pgbouncer not installed")
	}
	direct := pgtest.URL(t)
	u, err := url.Parse(direct)
	if err != nil {
		t.Fatal(err)
	}
	dbName := strings.TrimPrefix(u.Path, "/")
	port := startPgBouncer(t, bin, u.Query().Get("host"), dbName)
	pooled := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", port, dbName)

	e := newEnv(t, direct)
	e.vars["RTM_DATABASE_URL"] = pooled
	e.vars["RTM_MIGRATE_DATABASE_URL"] = direct
	e.vars["RTM_DB_POOLER_MODE"] = "transaction"
	a := e.start("a")
	wait.For(t, time.Minute, "agent active", func() bool { return strings.HasPrefix(e.holder(), a.idPrefix(e.hostID)) })
	id := e.enqueue("g1", job.KindStart, e.startPayload())
	e.waitJob(id, 2*time.Minute)
	rec := e.waitRecord("g1", runtime.StatusRunning, time.Minute)
	e.kill(rec.CurrentContainerID) // the watcher's transitions go through the pooler too
	e.waitRecord("g1", runtime.StatusStopped, time.Minute)
	id = e.enqueue("g2", job.KindStart, e.startPayload())
	e.waitJob(id, 2*time.Minute)
	id = e.enqueue("g2", job.KindStop, `{"timeout_seconds": 1}`)
	e.waitJob(id, 2*time.Minute)
	a.signal(syscall.SIGTERM)
	if lg := a.log(); strings.Contains(lg, "prepared statement") || strings.Contains(lg, "LISTEN") && !strings.Contains(lg, "listen=false") {
		t.Fatalf("session features used through the pooler:\n%s", lg)
	}
	if n := e.count(`SELECT count(*) FROM hosts WHERE host_id = $1 AND lease_expires_at IS NULL`, e.hostID); n != 1 {
		t.Fatalf("lease not released at SIGTERM")
	}
}

// startPgBouncer runs PgBouncer in transaction mode on a loopback port in
// front of the database in socketDir (as nobody when root: it refuses to
// run as root), until the test ends.
func startPgBouncer(t *testing.T, bin, socketDir, dbName string) int {
	t.Helper()
	dir, err := os.MkdirTemp("", "rtm-pgbouncer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	ini := fmt.Sprintf(`[databases]
%s = host=%s dbname=%s user=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s
pool_mode = transaction
max_client_conn = 200
default_pool_size = 10
ignore_startup_parameters = extra_float_digits
logfile = %s
`, dbName, socketDir, dbName, port, filepath.Join(dir, "users.txt"), filepath.Join(dir, "pgbouncer.log"))
	for name, body := range map[string]string{"pgbouncer.ini": ini, "users.txt": `"postgres" ""` + "\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(bin, filepath.Join(dir, "pgbouncer.ini"))
	if os.Geteuid() == 0 {
		u, err := user.Lookup("nobody")
		if err != nil {
			t.Fatal(err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		<-done
		if t.Failed() {
			lg, _ := os.ReadFile(filepath.Join(dir, "pgbouncer.log"))
			t.Logf("pgbouncer output:\n%s\n%s", out.String(), lg)
		}
	})
	wait.For(t, 30*time.Second, "pgbouncer to accept connections", func() bool {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			_ = c.Close()
		}
		return err == nil
	})
	return port
}
