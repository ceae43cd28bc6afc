package sweeper_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/galaxy/rtmanager/agent/engine"
	"github.com/galaxy/rtmanager/agent/intent"
	"github.com/galaxy/rtmanager/agent/sweeper"
	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/domain/job"
	"github.com/galaxy/rtmanager/internal/domain/outbox"
	"github.com/galaxy/rtmanager/internal/domain/runtime"
	"github.com/galaxy/rtmanager/internal/testutil/dockertest"
	"github.com/galaxy/rtmanager/internal/testutil/pgtest"
	"github.com/galaxy/rtmanager/internal/testutil/wait"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const ttl = time.Hour

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// fixture is one host: its own database, Docker engine and clock.
type fixture struct {
	t       *testing.T
	hostID  string
	url     string
	store   *db.Store
	clock   *clock
	eng     *engine.Docker
	image   string
	intents *intent.Registry
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	hostID := "sw-" + hex.EncodeToString(b[:])
	f := &fixture{t: t, hostID: hostID, clock: &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}}
	f.eng = dockertest.Engine(t, hostID)
	f.image = dockertest.EngineImage(t)
	f.url = pgtest.URL(t)
	f.store = f.newStore()
	f.intents = intent.New(time.Hour, nil)
	return f
}

// newStore opens another pool on the fixture's database, as a second
// agent would.
func (f *fixture) newStore() *db.Store {
	pool, err := db.Connect(context.Background(), f.url, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(pool.Close)
	return db.NewStore(pool, f.clock)
}

func (f *fixture) gameID(name string) string { return f.hostID + "-" + name }

// game creates a container of the game (created, not started) and its
// record, running, or stopped when stop is set.
func (f *fixture) game(name string, stop bool) runtime.RuntimeRecord {
	f.t.Helper()
	ctx := context.Background()
	gameID := f.gameID(name)
	c, err := f.eng.CreateContainer(ctx, engine.ContainerSpec{
		GameID: gameID, Name: runtime.ContainerName(gameID), Image: f.image, StatePath: f.t.TempDir(),
	})
	if err != nil {
		f.t.Fatal(err)
	}
	p := runtime.Placement{
		GameID: gameID, HostID: f.hostID, EngineEndpoint: runtime.EngineEndpointFor(gameID),
		StatePath: "/srv/state/" + gameID, DockerNetwork: "galaxy",
	}
	ch, err := f.store.UpdateRecord(ctx, gameID, func(_ *runtime.RuntimeRecord, at time.Time) (runtime.RuntimeRecord, outbox.TransitionDetails, error) {
		r, err := runtime.Create(p, c.ID, f.image, at)
		return r, outbox.TransitionDetails{Reason: outbox.ReasonJobStart}, err
	})
	if err != nil {
		f.t.Fatal(err)
	}
	if !stop {
		return ch.Record
	}
	ch, err = f.store.UpdateRecord(ctx, gameID, func(cur *runtime.RuntimeRecord, at time.Time) (runtime.RuntimeRecord, outbox.TransitionDetails, error) {
		next, err := cur.Stop(c.ID, at)
		return next, outbox.TransitionDetails{Reason: outbox.ReasonJobStop}, err
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return ch.Record
}

func (f *fixture) sweeper(eng engine.Engine, store *db.Store, cfg sweeper.Config) *sweeper.Sweeper {
	f.t.Helper()
	if cfg.Schedule == "" {
		cfg.Schedule = "@every 1h"
	}
	cfg.HostID = f.hostID
	cfg.Logger = slog.New(slog.NewTextHandler(f.t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	if cfg.StoppedTTL == 0 {
		cfg.StoppedTTL = ttl
	}
	s, err := sweeper.New(store, eng, f.intents, cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	return s
}

func (f *fixture) status(r runtime.RuntimeRecord) runtime.Status {
	f.t.Helper()
	got, err := f.store.GetRecord(context.Background(), r.GameID)
	if err != nil {
		f.t.Fatal(err)
	}
	return got.Status
}

func (f *fixture) containerExists(id string) bool {
	f.t.Helper()
	_, err := f.eng.InspectContainer(context.Background(), id)
	if errors.Is(err, engine.ErrNotFound) {
		return false
	}
	if err != nil {
		f.t.Fatal(err)
	}
	return true
}

// removedEvents returns, per game, the reasons of its runtime.removed
// events. It reads the table directly: every committed row is there.
func (f *fixture) removedEvents() map[string][]string {
	f.t.Helper()
	rows, err := f.store.Pool().Query(context.Background(),
		"SELECT game_id, payload->>'reason', payload->>'container_id' FROM outbox WHERE type = $1 ORDER BY id", string(outbox.TypeRuntimeRemoved))
	if err != nil {
		f.t.Fatal(err)
	}
	defer rows.Close()
	out := map[string][]string{}
	for rows.Next() {
		var game, reason, container string
		if err := rows.Scan(&game, &reason, &container); err != nil {
			f.t.Fatal(err)
		}
		out[game] = append(out[game], reason+":"+container)
	}
	if err := rows.Err(); err != nil {
		f.t.Fatal(err)
	}
	return out
}

func TestPassRemovesOnlyExpiredStoppedGames(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()

	expired := []runtime.RuntimeRecord{f.game("old-a", true), f.game("old-b", true), f.game("old-c", true)}
	running := f.game("running", false)
	queued := f.game("queued-job", true)
	busy := f.game("running-job", true)
	for _, r := range []runtime.RuntimeRecord{busy, queued} {
		if _, _, err := f.store.InsertJob(ctx, db.NewJob{HostID: f.hostID, GameID: r.GameID, Kind: job.KindStart}); err != nil {
			t.Fatal(err)
		}
	}
	if claimed, err := f.store.ClaimJobs(ctx, f.hostID, "agent-1", 1, time.Minute); err != nil || len(claimed) != 1 || claimed[0].GameID != busy.GameID {
		t.Fatalf("claim: %v %v", claimed, err)
	}
	f.clock.Advance(ttl + time.Minute)
	fresh := f.game("fresh", true)

	s := f.sweeper(f.eng, f.store, sweeper.Config{BatchSize: 2})
	rep, err := s.Pass(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Skipped || rep.Selected != 3 || rep.Removed != 3 || rep.Failed != 0 {
		t.Fatalf("report: %+v", rep)
	}
	events := f.removedEvents()
	for _, r := range expired {
		if st := f.status(r); st != runtime.StatusRemoved {
			t.Errorf("%s: status %s, want removed", r.GameID, st)
		}
		if f.containerExists(r.CurrentContainerID) {
			t.Errorf("%s: container %s still exists", r.GameID, r.CurrentContainerID)
		}
		if want := "cleanup:" + r.CurrentContainerID; len(events[r.GameID]) != 1 || events[r.GameID][0] != want {
			t.Errorf("%s: removed events %v, want exactly [%s]", r.GameID, events[r.GameID], want)
		}
		if _, ok := f.intents.Lookup(r.CurrentContainerID, intent.Cleanup); !ok {
			t.Errorf("%s: no cleanup intent for the watcher", r.GameID)
		}
	}
	for _, r := range []runtime.RuntimeRecord{running, queued, busy, fresh} {
		if st := f.status(r); st != r.Status {
			t.Errorf("%s: status %s, want %s", r.GameID, st, r.Status)
		}
		if !f.containerExists(r.CurrentContainerID) {
			t.Errorf("%s: container %s was removed", r.GameID, r.CurrentContainerID)
		}
		if len(events[r.GameID]) != 0 {
			t.Errorf("%s: removed events %v", r.GameID, events[r.GameID])
		}
	}

	// Nothing left to do: a second pass writes nothing.
	rep, err = s.Pass(ctx)
	if err != nil || rep.Selected != 0 || rep.Removed != 0 {
		t.Fatalf("second pass: %+v %v", rep, err)
	}
	if n := len(f.removedEvents()); n != 3 {
		t.Fatalf("after the second pass, %d games have removed events", n)
	}

	// The fresh game expires in turn.
	f.clock.Advance(ttl + time.Second)
	rep, err = s.Pass(ctx)
	if err != nil || rep.Removed != 1 || f.status(fresh) != runtime.StatusRemoved || f.containerExists(fresh.CurrentContainerID) {
		t.Fatalf("pass after the fresh game expired: %+v %v", rep, err)
	}
}

func TestInvalidScheduleFailsClearly(t *testing.T) {
	t.Parallel()
	for _, spec := range []string{"", "  ", "every 5m", "* * *", "61 * * * *", "0 */5 * * * *", "@every banana", "@sometimes", "0 0 30 2 *"} {
		if _, err := sweeper.ParseSchedule(spec); err == nil || !strings.Contains(err.Error(), "RTM_SWEEP_SCHEDULE") {
			t.Errorf("ParseSchedule(%q): want an error naming RTM_SWEEP_SCHEDULE, got %v", spec, err)
		}
		_, err := sweeper.New(nil, nil, nil, sweeper.Config{HostID: "h", Schedule: spec})
		if err == nil || !strings.Contains(err.Error(), "RTM_SWEEP_SCHEDULE") {
			t.Errorf("New with schedule %q: want an error naming RTM_SWEEP_SCHEDULE, got %v", spec, err)
		}
	}
	now := time.Date(2026, 3, 1, 12, 0, 30, 0, time.UTC)
	for spec, next := range map[string]time.Time{
		"*/10 * * * *":          time.Date(2026, 3, 1, 12, 10, 0, 0, time.UTC),
		"@every 10m":            now.Add(10 * time.Minute).Truncate(time.Second),
		"@hourly":               time.Date(2026, 3, 1, 13, 0, 0, 0, time.UTC),
		"CRON_TZ=UTC 0 3 * * *": time.Date(2026, 3, 2, 3, 0, 0, 0, time.UTC),
	} {
		s, err := sweeper.ParseSchedule(spec)
		if err != nil {
			t.Errorf("ParseSchedule(%q): %v", spec, err)
			continue
		}
		if got := s.Next(now); !got.Equal(next) {
			t.Errorf("%q: next after %s is %s, want %s", spec, now, got, next)
		}
	}
	_, err := sweeper.New(nil, nil, nil, sweeper.Config{HostID: "h", Schedule: "@hourly", StoppedTTL: -time.Second, BatchSize: -1})
	for _, want := range []string{"RTM_SWEEP_STOPPED_TTL", "RTM_SWEEP_BATCH_SIZE", "no store", "no Docker engine"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("New with bad settings: want an error naming %s, got %v", want, err)
		}
	}
}

// blockingEngine holds its first RemoveContainer until released.
type blockingEngine struct {
	engine.Engine
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func (b *blockingEngine) RemoveContainer(ctx context.Context, id string) error {
	b.once.Do(func() {
		close(b.entered)
		<-b.release
	})
	return b.Engine.RemoveContainer(ctx, id)
}

func TestTwoSweepersOnOneHostOneSkips(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	games := []runtime.RuntimeRecord{f.game("a", true), f.game("b", true)}
	f.clock.Advance(ttl + time.Minute)

	blocking := &blockingEngine{Engine: f.eng, entered: make(chan struct{}), release: make(chan struct{})}
	first := f.sweeper(blocking, f.store, sweeper.Config{})
	second := f.sweeper(f.eng, f.newStore(), sweeper.Config{})

	type result struct {
		rep sweeper.Report
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := first.Pass(ctx)
		done <- result{rep, err}
	}()
	select {
	case <-blocking.entered:
	case <-time.After(time.Minute):
		t.Fatal("the first sweeper never reached Docker")
	}
	rep, err := second.Pass(ctx)
	if err != nil || !rep.Skipped || rep.Selected != 0 || rep.Removed != 0 {
		t.Fatalf("second sweeper while the first sweeps: %+v %v, want skipped", rep, err)
	}
	close(blocking.release)
	var res result
	select {
	case res = <-done:
	case <-time.After(time.Minute):
		t.Fatal("the first sweeper did not finish")
	}
	if res.err != nil || res.rep.Skipped || res.rep.Removed != 2 {
		t.Fatalf("first sweeper: %+v %v", res.rep, res.err)
	}
	// Once the first is done, the second sweeps (and finds nothing).
	rep, err = second.Pass(ctx)
	if err != nil || rep.Skipped || rep.Removed != 0 {
		t.Fatalf("second sweeper afterwards: %+v %v", rep, err)
	}
	events := f.removedEvents()
	for _, g := range games {
		if len(events[g.GameID]) != 1 {
			t.Errorf("%s: removed events %v, want one", g.GameID, events[g.GameID])
		}
	}
}

// interruptingEngine removes the container, then cancels the pass: the
// record's transaction never commits.
type interruptingEngine struct {
	engine.Engine
	cancel  context.CancelFunc
	removed []string
}

func (e *interruptingEngine) RemoveContainer(ctx context.Context, id string) error {
	err := e.Engine.RemoveContainer(ctx, id)
	e.removed = append(e.removed, id)
	e.cancel()
	return err
}

func TestInterruptedPassIsSafeToRerun(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	games := []runtime.RuntimeRecord{f.game("a", true), f.game("b", true), f.game("c", true)}
	f.clock.Advance(ttl + time.Minute)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	interrupting := &interruptingEngine{Engine: f.eng, cancel: cancel}
	rep, err := f.sweeper(interrupting, f.store, sweeper.Config{}).Pass(ctx)
	if err == nil || !errors.Is(err, context.Canceled) || rep.Removed != 0 {
		t.Fatalf("interrupted pass: %+v %v", rep, err)
	}
	// Half-way: the first game's container is gone, its record is not.
	if len(interrupting.removed) != 1 || interrupting.removed[0] != games[0].CurrentContainerID {
		t.Fatalf("interrupted pass removed %v", interrupting.removed)
	}
	if f.containerExists(games[0].CurrentContainerID) || f.status(games[0]) != runtime.StatusStopped {
		t.Fatal("the interruption did not leave the first game half-done")
	}
	if len(f.removedEvents()) != 0 {
		t.Fatalf("events after the interrupted pass: %v", f.removedEvents())
	}

	rep, err = f.sweeper(f.eng, f.store, sweeper.Config{}).Pass(context.Background())
	if err != nil || rep.Removed != 3 {
		t.Fatalf("rerun: %+v %v", rep, err)
	}
	events := f.removedEvents()
	for _, g := range games {
		if f.status(g) != runtime.StatusRemoved || f.containerExists(g.CurrentContainerID) {
			t.Errorf("%s not removed", g.GameID)
		}
		if want := "cleanup:" + g.CurrentContainerID; len(events[g.GameID]) != 1 || events[g.GameID][0] != want {
			t.Errorf("%s: removed events %v, want exactly [%s]", g.GameID, events[g.GameID], want)
		}
	}
}

// TestCleanupAfterTheWatcherRemovedTheRecord: when the events watcher saw
// the destroy and removed the record first, the sweeper writes nothing.
func TestCleanupAfterTheWatcherRemovedTheRecord(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	g := f.game("a", true)
	f.clock.Advance(ttl + time.Minute)
	watcher := &hookEngine{Engine: f.eng, after: func(id string) {
		if _, err := f.store.UpdateRecord(ctx, g.GameID, func(cur *runtime.RuntimeRecord, at time.Time) (runtime.RuntimeRecord, outbox.TransitionDetails, error) {
			next, err := cur.Remove(id, at)
			return next, outbox.TransitionDetails{Reason: outbox.ReasonObservedDestroy}, err
		}); err != nil {
			t.Error(err)
		}
	}}
	rep, err := f.sweeper(watcher, f.store, sweeper.Config{}).Pass(ctx)
	if err != nil || rep.Removed != 0 || rep.Passed != 1 {
		t.Fatalf("pass: %+v %v", rep, err)
	}
	if ev := f.removedEvents()[g.GameID]; len(ev) != 1 || !strings.HasPrefix(ev[0], "observed_destroy:") {
		t.Fatalf("removed events: %v", ev)
	}
}

type hookEngine struct {
	engine.Engine
	after func(id string)
}

func (h *hookEngine) RemoveContainer(ctx context.Context, id string) error {
	err := h.Engine.RemoveContainer(ctx, id)
	h.after(id)
	return err
}

func TestPassPrunesOldJobsAndReadOutboxRows(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	pool := f.store.Pool()

	for _, g := range []string{"g1", "g2"} {
		if _, _, err := f.store.InsertJob(ctx, db.NewJob{HostID: f.hostID, GameID: f.gameID(g), Kind: job.KindStop}); err != nil {
			t.Fatal(err)
		}
	}
	claimed, err := f.store.ClaimJobs(ctx, f.hostID, "agent-1", 10, time.Minute)
	if err != nil || len(claimed) != 2 {
		t.Fatalf("claim: %v %v", claimed, err)
	}
	for _, j := range claimed {
		if _, err := f.store.FinishJob(ctx, j, "agent-1", db.Outcome{Status: job.StatusSucceeded}); err != nil {
			t.Fatal(err)
		}
	}
	// One finished job and every outbox row so far (two job outcomes) are old.
	if _, err := pool.Exec(ctx, "UPDATE jobs SET finished_at = now() - interval '3 days' WHERE id = $1", claimed[0].ID); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "UPDATE outbox SET created_at = now() - interval '3 days'"); err != nil {
		t.Fatal(err)
	}
	// A consumer has read the first of them only.
	var first db.Position
	if err := pool.QueryRow(ctx, "SELECT xid, id FROM outbox ORDER BY xid, id LIMIT 1").Scan(&first.Xid, &first.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.RegisterOutboxConsumer(ctx, "game-master"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.AdvanceOutboxConsumer(ctx, "game-master", first); err != nil {
		t.Fatal(err)
	}

	cfg := sweeper.Config{JobRetention: 24 * time.Hour, OutboxRetention: 24 * time.Hour}
	// While another agent prunes, this one does not.
	lock, held, err := f.store.TryLockRetention(ctx)
	if err != nil || !held {
		t.Fatalf("retention lock: %v %v", held, err)
	}
	rep, err := f.sweeper(f.eng, f.newStore(), cfg).Pass(ctx)
	if err != nil || !rep.RetentionSkipped || rep.JobsDeleted != 0 || rep.OutboxDeleted != 0 {
		t.Fatalf("pass while another agent prunes: %+v %v", rep, err)
	}
	lock.Release()

	rep, err = f.sweeper(f.eng, f.store, cfg).Pass(ctx)
	if err != nil || rep.RetentionSkipped || rep.JobsDeleted != 1 || rep.OutboxDeleted != 1 {
		t.Fatalf("pass: %+v %v, want one job and one outbox row deleted", rep, err)
	}
	if _, err := f.store.GetJob(ctx, claimed[0].ID); !errors.Is(err, db.ErrJobNotFound) {
		t.Fatalf("old job: %v", err)
	}
	if _, err := f.store.GetJob(ctx, claimed[1].ID); err != nil {
		t.Fatalf("recent job: %v", err)
	}
	var left int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM outbox").Scan(&left); err != nil || left != 1 {
		t.Fatalf("outbox rows left: %d %v", left, err)
	}
}

func TestRunSweepsOnSchedule(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	g := f.game("a", true)
	f.clock.Advance(ttl + time.Minute)

	s := f.sweeper(f.eng, f.store, sweeper.Config{Schedule: "@every 1s"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	wait.For(t, 30*time.Second, "the scheduled pass to remove the game", func() bool {
		return f.status(g) == runtime.StatusRemoved
	})
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Run did not return after cancel")
	}
	if f.containerExists(g.CurrentContainerID) {
		t.Fatal("container still exists")
	}
}

func TestPassPrunesOldCrashReports(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	pool := f.store.Pool()
	old, recent := f.gameID("old"), f.gameID("recent")
	// Two old reports of one game, one recent of the other, and one of the
	// first game captured just inside the retention.
	if _, err := pool.Exec(ctx, `INSERT INTO crash_reports (game_id, host_id, container_id, exited_at, captured_at) VALUES
		($1, $3, 'c1', now(), now() - interval '40 days'),
		($1, $3, 'c2', now(), now() - interval '31 days'),
		($1, $3, 'c3', now(), now() - interval '29 days'),
		($2, $3, 'c4', now(), now())`, old, recent, f.hostID); err != nil {
		t.Fatal(err)
	}
	cfg := sweeper.Config{CrashRetention: 30 * 24 * time.Hour, BatchSize: 1}
	rep, err := f.sweeper(f.eng, f.store, cfg).Pass(ctx)
	if err != nil || rep.CrashReportsDeleted != 2 || rep.JobsDeleted != 0 || rep.OutboxDeleted != 0 {
		t.Fatalf("pass: %+v %v, want two crash reports deleted", rep, err)
	}
	rows, err := pool.Query(ctx, `SELECT container_id FROM crash_reports WHERE game_id IN ($1, $2) ORDER BY container_id`, old, recent)
	if err != nil {
		t.Fatal(err)
	}
	left, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || strings.Join(left, ",") != "c3,c4" {
		t.Fatalf("reports left: %v %v, want c3,c4", left, err)
	}
	if _, err := sweeper.New(f.store, f.eng, nil, sweeper.Config{HostID: "h", Schedule: "@every 1m", CrashRetention: -time.Second}); err == nil || !strings.Contains(err.Error(), sweeper.SettingCrashRetention) {
		t.Fatalf("negative crash retention: %v, want an error naming %s", err, sweeper.SettingCrashRetention)
	}
}
