package executor_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/galaxy/rtmanager/agent/engine"
	"github.com/galaxy/rtmanager/agent/executor"
	"github.com/galaxy/rtmanager/agent/intent"
	"github.com/galaxy/rtmanager/agent/worker"
	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/domain/job"
	"github.com/galaxy/rtmanager/internal/domain/outbox"
	"github.com/galaxy/rtmanager/internal/domain/runtime"
	"github.com/galaxy/rtmanager/internal/testutil/dockertest"
	"github.com/galaxy/rtmanager/internal/testutil/pgtest"
	"github.com/galaxy/rtmanager/internal/testutil/wait"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(runChild())
	}
	pgtest.Main(m)
}

// env is one test's agent: its own database, host id, network, state root.
type env struct {
	t       testing.TB
	store   *db.Store
	dbURL   string
	eng     *engine.Docker
	cli     *client.Client
	image   string
	hostID  string
	network string
	root    string
	policy  job.Policy
	intents *intent.Registry
}

// unreachableRegistry is a registry address nothing listens on.
const unreachableRegistry = "127.0.0.1:1"

func newEnv(t testing.TB) *env {
	t.Helper()
	return newEnvWith(t, engine.Options{})
}

// newEnvWith is newEnv with engine options of the test's own (the host
// id is the env's).
func newEnvWith(t testing.TB, opts engine.Options) *env {
	t.Helper()
	hostID := dockertest.UniqueName(t)
	e := &env{t: t, hostID: hostID, network: "net-" + hostID, intents: intent.New(time.Minute, nil)}
	opts.HostID = hostID
	e.eng = dockertest.EngineWith(t, opts)
	e.cli = dockertest.Client(t)
	e.image = dockertest.EngineImage(t)
	e.dbURL = pgtest.URL(t)
	pool, err := db.Connect(context.Background(), e.dbURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	e.store = db.NewStore(pool, nil)
	e.root = t.TempDir()
	e.policy = job.DefaultPolicy()
	e.policy.StateRoot = e.root
	// The loopback registry refuses connections: a pull from it fails at
	// once without leaving the machine.
	e.policy.AllowedImages = []string{dockertest.ImageRepo, unreachableRegistry + "/*"}
	e.policy.DefaultLimits.MemoryBytes = 64 << 20
	e.policy.DefaultStopTimeout = 5 * time.Second
	return e
}

func (e *env) workerConfig(owner string) worker.Config {
	return worker.Config{
		HostID: e.hostID, Owner: owner, Concurrency: 4,
		LeaseDuration: 10 * time.Second, LeaseRenewInterval: time.Second,
		PollInterval: 100 * time.Millisecond, UseListen: true, Policy: e.policy, Network: e.network,
		RetryBaseDelay: 10 * time.Millisecond, RetryMaxDelay: 100 * time.Millisecond,
	}
}

func (e *env) executor() *executor.Executor {
	return executor.New(e.eng, executor.Config{Records: e.store, StateRoot: e.root, Health: e.store})
}

// run starts a worker with the real executor until the test ends.
func (e *env) run() *worker.Worker { return e.runWith(e.executor()) }

// runWith starts a worker with exec until the test ends.
func (e *env) runWith(exec worker.Executor) *worker.Worker {
	w := worker.New(e.store, exec, e.workerConfig("owner-"+e.hostID))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	e.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			e.t.Errorf("Run: %v", err)
		}
	})
	return w
}

// insert enqueues a job with plain SQL, as the Game Master does.
func (e *env) insert(gameID, kind, payload string) int64 {
	e.t.Helper()
	var id int64
	err := e.store.Pool().QueryRow(context.Background(),
		`INSERT INTO jobs (host_id, game_id, kind, payload) VALUES ($1, $2, $3, $4::jsonb) RETURNING id`,
		e.hostID, gameID, kind, payload).Scan(&id)
	if err != nil {
		e.t.Fatalf("insert %s job: %v", kind, err)
	}
	return id
}

// finished waits for the job to end and returns it.
func (e *env) finished(id int64) db.Job {
	e.t.Helper()
	var j db.Job
	wait.For(e.t, 2*time.Minute, fmt.Sprintf("job %d to finish", id), func() bool {
		var err error
		if j, err = e.store.GetJob(context.Background(), id); err != nil {
			e.t.Fatal(err)
		}
		return j.Status.IsFinal()
	})
	return j
}

func (e *env) succeeded(id int64) db.Job {
	e.t.Helper()
	j := e.finished(id)
	if j.Status != job.StatusSucceeded {
		e.t.Fatalf("job %d (%s) ended %s: %s", id, j.Kind, j.Status, j.LastError)
	}
	return j
}

func (e *env) record(gameID string) runtime.RuntimeRecord {
	e.t.Helper()
	r, err := e.store.GetRecord(context.Background(), gameID)
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

// containers lists every container, in any state, labelled for the game
// on this host, as Docker reports them.
func (e *env) containers(gameID string) []engine.Container {
	e.t.Helper()
	all, err := e.eng.ListManaged(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	var out []engine.Container
	for _, c := range all {
		if c.GameID == gameID {
			out = append(out, c)
		}
	}
	return out
}

// events returns the outbox event types of a game, in order.
func (e *env) events(gameID string) []string {
	e.t.Helper()
	rows, err := e.store.Pool().Query(context.Background(),
		`SELECT type || coalesce(':' || (payload->>'reason'), '') FROM outbox WHERE game_id = $1 ORDER BY id`, gameID)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

func startPayload(image string) string {
	return fmt.Sprintf(`{"image_ref": %q, "env": {"GAME_ID": "x"}, "limits": {"pids_limit": 64}}`, image)
}

func TestLifecycleEndToEnd(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.run()
	ctx := context.Background()
	const g = "life"

	// start
	e.succeeded(e.insert(g, "start", startPayload(e.image)))
	rec := e.record(g)
	cs := e.containers(g)
	if len(cs) != 1 || !cs[0].Running || cs[0].ID != rec.CurrentContainerID || cs[0].Name != "galaxy-game-"+g {
		t.Fatalf("after start: containers %+v, record %+v", cs, rec)
	}
	if rec.Status != runtime.StatusRunning || rec.CurrentImageRef != e.image || rec.EngineEndpoint != "http://galaxy-game-life:8080" ||
		rec.StatePath != filepath.Join(e.root, g) || rec.DockerNetwork != e.network || rec.HostID != e.hostID {
		t.Fatalf("record after start: %+v", rec)
	}
	if fi, err := os.Stat(rec.StatePath); err != nil || !fi.IsDir() || fi.Mode().Perm()&0o007 != 0 {
		t.Fatalf("state dir: %v, %v", fi, err)
	}
	insp, err := e.cli.ContainerInspect(ctx, rec.CurrentContainerID, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	hc := insp.Container.HostConfig
	if hc.Privileged || hc.RestartPolicy.Name != "no" || hc.PidsLimit == nil || *hc.PidsLimit != 64 || hc.Memory != 64<<20 ||
		len(hc.Mounts) != 1 || hc.Mounts[0].Source != rec.StatePath || insp.Container.Config.Labels[engine.LabelJob] == "" {
		t.Fatalf("container host config: %+v", hc)
	}

	// start again: already running, no change
	e.succeeded(e.insert(g, "start", startPayload(e.image)))
	if again := e.record(g); !again.Equal(rec) || len(e.containers(g)) != 1 {
		t.Fatalf("a second start changed things: %+v", again)
	}

	// stop, once the engine handles SIGTERM: sent earlier, it would hit
	// the Go runtime's default action and the engine would exit 143.
	wait.ForErr(t, time.Minute, "engine ready for SIGTERM", func() (bool, error) {
		_, err := os.Stat(filepath.Join(rec.StatePath, "engine-started"))
		return err == nil, err
	})
	e.succeeded(e.insert(g, "stop", `{"timeout_seconds": 5}`))
	rec = e.record(g)
	cs = e.containers(g)
	if rec.Status != runtime.StatusStopped || len(cs) != 1 || cs[0].Running {
		t.Fatalf("after stop: %+v, %+v", rec, cs)
	}
	var exit *int
	var requested bool
	if err := e.store.Pool().QueryRow(ctx,
		`SELECT (payload->>'exit_code')::int, coalesce((payload->>'requested_by_job')::bool, false) FROM outbox WHERE game_id = $1 AND payload->>'reason' = 'job_stop'`, g).Scan(&exit, &requested); err != nil {
		t.Fatal(err)
	}
	if exit == nil || *exit != 0 || !requested {
		t.Fatalf("stop event: exit %s, requested %v", fmtExit(exit), requested)
	}

	// restart: the same container, running again
	e.succeeded(e.insert(g, "restart", `{}`))
	rec = e.record(g)
	cs = e.containers(g)
	if rec.Status != runtime.StatusRunning || len(cs) != 1 || !cs[0].Running || cs[0].ID != rec.CurrentContainerID {
		t.Fatalf("after restart: %+v, %+v", rec, cs)
	}

	// remove: container gone, state kept
	e.succeeded(e.insert(g, "remove", `{}`))
	rec = e.record(g)
	if rec.Status != runtime.StatusRemoved || rec.CurrentContainerID != "" || len(e.containers(g)) != 0 {
		t.Fatalf("after remove: %+v, %+v", rec, e.containers(g))
	}
	if _, err := os.Stat(rec.StatePath); err != nil {
		t.Fatalf("state directory must survive a remove: %v", err)
	}

	// anything on a removed record fails at once with the sentinel
	for _, kind := range []string{"start", "stop", "restart", "remove", "change_image"} {
		payload := `{}`
		if kind == "start" || kind == "change_image" {
			payload = fmt.Sprintf(`{"image_ref": %q}`, e.image)
		}
		j := e.finished(e.insert(g, kind, payload))
		if j.Status != job.StatusFailed || j.Attempt != 1 || !strings.Contains(j.LastError, runtime.ErrRemoved.Error()) {
			t.Errorf("%s on a removed record: %s after %d attempts: %q", kind, j.Status, j.Attempt, j.LastError)
		}
	}
	if n := len(e.containers(g)); n != 0 {
		t.Fatalf("%d containers after jobs on a removed record", n)
	}
	// No watcher runs here: every event is a job's.
	want := []string{"runtime.running:job_start", "job.succeeded", "job.succeeded", "runtime.stopped:job_stop", "job.succeeded",
		"runtime.running:job_restart", "job.succeeded", "runtime.removed:job_remove", "job.succeeded",
		"job.failed", "job.failed", "job.failed", "job.failed", "job.failed"}
	if got := e.events(g); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("outbox events of the game:\n got %v\nwant %v", got, want)
	}
}

func TestChangeImageReplacesContainer(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.run()
	ctx := context.Background()
	const g = "swap"
	newImage := dockertest.ImageRepo + ":" + e.hostID
	if _, err := e.cli.ImageTag(ctx, client.ImageTagOptions{Source: e.image, Target: newImage}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = e.cli.ImageRemove(context.Background(), newImage, client.ImageRemoveOptions{}) })

	e.succeeded(e.insert(g, "start", startPayload(e.image)))
	before := e.record(g)
	if err := os.WriteFile(filepath.Join(before.StatePath, "save"), []byte("turn 7"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.succeeded(e.insert(g, "change_image", fmt.Sprintf(`{"image_ref": %q}`, newImage)))
	after := e.record(g)
	if after.Status != runtime.StatusRunning || after.CurrentImageRef != newImage || after.CurrentContainerID == before.CurrentContainerID ||
		after.StatePath != before.StatePath {
		t.Fatalf("record after image change: %+v (before %+v)", after, before)
	}
	wait.For(t, time.Minute, "the old container removed", func() bool { return len(e.containers(g)) == 1 })
	cs := e.containers(g)
	if cs[0].ID != after.CurrentContainerID || !cs[0].Running || cs[0].Image != newImage || cs[0].Name != "galaxy-game-"+g {
		t.Fatalf("containers after image change: %+v", cs)
	}
	if b, err := os.ReadFile(filepath.Join(after.StatePath, "save")); err != nil || string(b) != "turn 7" {
		t.Fatalf("state lost: %q, %v", b, err)
	}

	// An image that cannot be pulled: the job fails clearly and the old
	// engine keeps running untouched.
	var id int64
	if err := e.store.Pool().QueryRow(ctx,
		`INSERT INTO jobs (host_id, game_id, kind, payload, max_attempts) VALUES ($1, $2, 'change_image', $3::jsonb, 1) RETURNING id`,
		e.hostID, g, fmt.Sprintf(`{"image_ref": %q}`, unreachableRegistry+"/engine:missing")).Scan(&id); err != nil {
		t.Fatal(err)
	}
	j := e.finished(id)
	if j.Status != job.StatusFailed || !strings.Contains(j.LastError, "ensure image") {
		t.Fatalf("change to a missing image: %s %q", j.Status, j.LastError)
	}
	if now := e.record(g); !now.Equal(after) {
		t.Fatalf("record changed by a failed image change: %+v", now)
	}
	if cs := e.containers(g); len(cs) != 1 || cs[0].ID != after.CurrentContainerID || !cs[0].Running {
		t.Fatalf("containers after a failed image change: %+v", cs)
	}
}

func TestHostileJobsFailWithoutContainers(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.run()
	outside := t.TempDir()
	// Traps: a symlink out of the root inside game h-symlink's directory,
	// game h-symlink2's directory itself a symlink out, and a symlink from
	// game h-cross's directory to game h-victim's.
	for _, d := range []string{"h-symlink", "h-cross", "h-victim/data"} {
		if err := os.MkdirAll(filepath.Join(e.root, d), 0o750); err != nil {
			t.Fatal(err)
		}
	}
	for link, target := range map[string]string{
		"h-symlink/escape": outside,
		"h-symlink2":       outside,
		"h-cross/victim":   filepath.Join(e.root, "h-victim"),
	} {
		if err := os.Symlink(target, filepath.Join(e.root, link)); err != nil {
			t.Fatal(err)
		}
	}
	img := e.image
	cases := []struct{ game, kind, payload, want string }{
		{"h-traversal", "start", fmt.Sprintf(`{"image_ref": %q, "state_dir": "../../etc"}`, img), "state directory outside the game's own directory"},
		{"h-absolute", "start", fmt.Sprintf(`{"image_ref": %q, "state_dir": "/etc"}`, img), "state directory outside the game's own directory"},
		{"h-symlink", "start", fmt.Sprintf(`{"image_ref": %q, "state_dir": "h-symlink/escape/game"}`, img), "pointing outside the game's directory"},
		{"h-symlink2", "start", fmt.Sprintf(`{"image_ref": %q}`, img), "must be a real directory"},
		{"h-other", "start", fmt.Sprintf(`{"image_ref": %q, "state_dir": "h-victim"}`, img), "outside the game's own directory"},
		{"h-other2", "start", fmt.Sprintf(`{"image_ref": %q, "state_dir": "h-victim/data"}`, img), "outside the game's own directory"},
		{"h-cross", "start", fmt.Sprintf(`{"image_ref": %q, "state_dir": "h-cross/victim/data"}`, img), "pointing outside the game's directory"},
		{"h-image", "start", `{"image_ref": "evil.example.com/miner:1"}`, "image not allowed"},
		{"Bad_Game", "start", fmt.Sprintf(`{"image_ref": %q}`, img), "invalid game id"},
		{"h-kind", "format_disk", `{}`, "unknown job kind"},
		{"h-limits", "start", fmt.Sprintf(`{"image_ref": %q, "limits": {"memory_bytes": -1}}`, img), "invalid resource limits"},
		{"h-env", "start", fmt.Sprintf(`{"image_ref": %q, "env": {"RTM_HOST": "x"}}`, img), "invalid environment"},
		{"h-big", "start", fmt.Sprintf(`{"image_ref": %q, "env": {"PAD": %q}}`, img, strings.Repeat("x", 70<<10)), "invalid job payload"},
		{"h-array", "start", `[1, 2, 3]`, "invalid job payload"},
	}
	for _, c := range cases {
		j := e.finished(e.insert(c.game, c.kind, c.payload))
		if j.Status != job.StatusFailed || j.Attempt != 1 || !strings.Contains(j.LastError, c.want) {
			t.Errorf("%s: %s after %d attempts, error %q; want failed at once with %q", c.game, j.Status, j.Attempt, j.LastError, c.want)
		}
		if n := len(e.containers(c.game)); n != 0 {
			t.Errorf("%s: %d containers created", c.game, n)
		}
	}
	if _, err := os.Stat(filepath.Join(outside, "game")); err == nil {
		t.Fatal("a directory was created through the escaping symlink")
	}
	if entries, err := os.ReadDir(filepath.Join(e.root, "h-victim")); err != nil || len(entries) != 1 {
		t.Fatalf("game h-victim's directory changed: %v %v", entries, err)
	}
	// A symlink that stays inside the game's directory is fine.
	if err := os.MkdirAll(filepath.Join(e.root, "h-alias", "real"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(e.root, "h-alias", "real"), filepath.Join(e.root, "h-alias", "alias")); err != nil {
		t.Fatal(err)
	}
	e.succeeded(e.insert("h-alias", "start", fmt.Sprintf(`{"image_ref": %q, "state_dir": "h-alias/alias/g"}`, img)))
	if _, err := os.Stat(filepath.Join(e.root, "h-alias", "real", "g")); err != nil {
		t.Fatalf("state dir through an inside symlink: %v", err)
	}
}

func TestNonJSONPayloadRefusedAtInsert(t *testing.T) {
	t.Parallel()
	s := db.NewStore(pgtest.Pool(t), nil)
	_, err := s.Pool().Exec(context.Background(),
		`INSERT INTO jobs (host_id, game_id, kind, payload) VALUES ('h', 'g', 'start', $1::jsonb)`, `{"image_ref": `)
	if err == nil || !strings.Contains(err.Error(), "json") {
		t.Fatalf("insert of a non-JSON payload: %v; want the database to refuse it", err)
	}
}

// TestRemoveFindsItsGoalReached: at-least-once delivery of a remove job.
// The container went and another writer (here the test, as the events
// watcher would) recorded the removal after the job was enqueued, or after
// an earlier attempt of the job: the job succeeds with nothing to write.
// A remove enqueued for a game removed before it still fails (see
// TestLifecycleEndToEnd).
func TestRemoveFindsItsGoalReached(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.run()
	ctx := context.Background()
	removeBehind := func(g string) {
		t.Helper()
		rec := e.record(g)
		if err := e.eng.RemoveContainer(ctx, rec.CurrentContainerID); err != nil {
			t.Fatal(err)
		}
		if _, err := e.store.UpdateRecord(ctx, g, func(cur *runtime.RuntimeRecord, at time.Time) (runtime.RuntimeRecord, outbox.TransitionDetails, error) {
			next, err := cur.Remove(cur.CurrentContainerID, at)
			return next, outbox.TransitionDetails{Reason: outbox.ReasonObservedDestroy}, err
		}); err != nil {
			t.Fatal(err)
		}
	}
	due := func(id int64) {
		t.Helper()
		if _, err := e.store.Pool().Exec(ctx, `UPDATE jobs SET run_after = now() WHERE id = $1`, id); err != nil {
			t.Fatal(err)
		}
	}

	// Enqueued (not yet due) while the game ran; removed before it ran.
	e.succeeded(e.insert("before", "start", startPayload(e.image)))
	var id int64
	if err := e.store.Pool().QueryRow(ctx,
		`INSERT INTO jobs (host_id, game_id, kind, run_after) VALUES ($1, 'before', 'remove', now() + interval '1 hour') RETURNING id`,
		e.hostID).Scan(&id); err != nil {
		t.Fatal(err)
	}
	removeBehind("before")
	due(id)
	e.succeeded(id)

	// A retry (its first attempt used) of a remove enqueued after the
	// removal: the first attempt did the work and died before its commit.
	e.succeeded(e.insert("retried", "start", startPayload(e.image)))
	removeBehind("retried")
	// Inserted with its first attempt used, in one statement (the worker
	// may claim a job the moment it is inserted).
	if err := e.store.Pool().QueryRow(ctx,
		`INSERT INTO jobs (host_id, game_id, kind, attempt, last_error) VALUES ($1, 'retried', 'remove', 1, 'agent died') RETURNING id`,
		e.hostID).Scan(&id); err != nil {
		t.Fatal(err)
	}
	if j := e.succeeded(id); j.Attempt != 2 {
		t.Fatalf("retried remove: %+v", j)
	}

	for _, g := range []string{"before", "retried"} {
		want := []string{"runtime.running:job_start", "job.succeeded", "runtime.removed:observed_destroy", "job.succeeded"}
		if got := e.events(g); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("game %s: events %v, want %v", g, got, want)
		}
	}
}

func fmtExit(code *int) string {
	if code == nil {
		return "none"
	}
	return strconv.Itoa(*code)
}
