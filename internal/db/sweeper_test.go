package db_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/domain/job"
	"github.com/galaxy/rtmanager/internal/domain/outbox"
	"github.com/galaxy/rtmanager/internal/domain/runtime"
	"github.com/galaxy/rtmanager/internal/testutil/pgtest"
)

// sweepClock is a clock the test moves by hand.
type sweepClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *sweepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *sweepClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newClockedStore(t *testing.T) (*db.Store, *sweepClock) {
	t.Helper()
	clock := &sweepClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	return db.NewStore(pgtest.Pool(t), clock), clock
}

// sweepRecord creates a running record of gameID on hostID bound to
// containerID and, when stop is set, stops it.
func sweepRecord(t *testing.T, s *db.Store, hostID, gameID, containerID string, stop bool) runtime.RuntimeRecord {
	t.Helper()
	ctx := context.Background()
	p := runtime.Placement{
		GameID: gameID, HostID: hostID, EngineEndpoint: runtime.EngineEndpointFor(gameID),
		StatePath: "/srv/state/" + gameID, DockerNetwork: "galaxy",
	}
	ch, err := s.UpdateRecord(ctx, gameID, func(_ *runtime.RuntimeRecord, at time.Time) (runtime.RuntimeRecord, outbox.TransitionDetails, error) {
		r, err := runtime.Create(p, containerID, "engine:1", at)
		return r, outbox.TransitionDetails{Reason: outbox.ReasonJobStart}, err
	})
	if err != nil {
		t.Fatal(err)
	}
	if !stop {
		return ch.Record
	}
	ch, err = s.UpdateRecord(ctx, gameID, func(cur *runtime.RuntimeRecord, at time.Time) (runtime.RuntimeRecord, outbox.TransitionDetails, error) {
		next, err := cur.Stop(containerID, at)
		return next, outbox.TransitionDetails{Reason: outbox.ReasonJobStop}, err
	})
	if err != nil {
		t.Fatal(err)
	}
	return ch.Record
}

func gameIDs(rs []runtime.RuntimeRecord) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.GameID
	}
	return out
}

func sameStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestListExpiredStoppedSelectsOnlyExpiredIdleStoppedGames(t *testing.T) {
	t.Parallel()
	s, clock := newClockedStore(t)
	ctx := context.Background()

	sweepRecord(t, s, "host-a", "old-1", "c-old-1", true)
	clock.Advance(time.Second)
	sweepRecord(t, s, "host-a", "old-2", "c-old-2", true)
	sweepRecord(t, s, "host-a", "old-running", "c-run", false)
	sweepRecord(t, s, "host-a", "old-queued", "c-q", true)
	sweepRecord(t, s, "host-a", "old-running-job", "c-b", true)
	sweepRecord(t, s, "host-b", "old-other-host", "c-o", true)
	sweepRecord(t, s, "host-a", "old-3", "c-old-3", true)
	// A finished job does not keep a game from being swept.
	j, _, err := s.InsertJob(ctx, db.NewJob{HostID: "host-a", GameID: "old-3", Kind: job.KindStop})
	if err != nil {
		t.Fatal(err)
	}
	if claimed, err := s.ClaimJobs(ctx, "host-a", "agent-1", 10, time.Minute); err != nil || len(claimed) != 1 || claimed[0].ID != j.ID {
		t.Fatalf("claim: %v %v", jobIDs(claimed), err)
	} else if _, err := s.FinishJob(ctx, claimed[0], "agent-1", db.Outcome{Status: job.StatusFailed, Error: "x"}); err != nil {
		t.Fatal(err)
	}
	// A running job (old-running-job) and a queued one (old-queued) do.
	for _, g := range []string{"old-running-job", "old-queued"} {
		if _, _, err := s.InsertJob(ctx, db.NewJob{HostID: "host-a", GameID: g, Kind: job.KindStart}); err != nil {
			t.Fatal(err)
		}
	}
	if claimed, err := s.ClaimJobs(ctx, "host-a", "agent-1", 1, time.Minute); err != nil || len(claimed) != 1 || claimed[0].GameID != "old-running-job" {
		t.Fatalf("claim: %v %v", jobIDs(claimed), err)
	}

	clock.Advance(time.Hour)
	sweepRecord(t, s, "host-a", "fresh", "c-fresh", true)
	clock.Advance(time.Minute)
	cutoff := s.Now().Add(-30 * time.Minute)

	// Batches of two, in (last_op_at, game_id) order.
	var got []string
	var after db.SweepKey
	for range 10 {
		batch, err := s.ListExpiredStopped(ctx, "host-a", cutoff, after, 2)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, gameIDs(batch)...)
		if len(batch) < 2 {
			break
		}
		after = db.KeyOf(batch[len(batch)-1])
	}
	if want := []string{"old-1", "old-2", "old-3"}; !sameStrings(got, want) {
		t.Fatalf("expired: got %v, want %v", got, want)
	}
}

func TestCommitCleanup(t *testing.T) {
	t.Parallel()
	s, clock := newClockedStore(t)
	ctx := context.Background()
	rec := sweepRecord(t, s, "host-a", "g1", "c1", true)
	clock.Advance(time.Hour)

	ok, err := s.StillExpired(ctx, rec, s.Now())
	if err != nil || !ok {
		t.Fatalf("still expired: %v %v", ok, err)
	}
	if ok, err := s.StillExpired(ctx, rec, rec.LastOpAt); err != nil || ok {
		t.Fatalf("expired at a cutoff equal to last_op_at: %v %v", ok, err)
	}
	ch, err := s.CommitCleanup(ctx, rec)
	if err != nil || !ch.Changed || ch.Record.Status != runtime.StatusRemoved || ch.Record.CurrentContainerID != "" || ch.EventID == 0 {
		t.Fatalf("commit cleanup: %+v %v", ch, err)
	}
	// Again: already removed, nothing written.
	ch, err = s.CommitCleanup(ctx, rec)
	if err != nil || ch.Changed {
		t.Fatalf("commit cleanup again: %+v %v", ch, err)
	}
	if ok, err := s.StillExpired(ctx, rec, s.Now()); err != nil || ok {
		t.Fatalf("a removed record is still expired: %v %v", ok, err)
	}
	evs := readEvents(t, s, 3)
	if len(evs) != 3 || evs[2].Type != outbox.TypeRuntimeRemoved {
		t.Fatalf("events: %+v", evs)
	}

	// A record started again since it was selected is left alone.
	rec2 := sweepRecord(t, s, "host-a", "g2", "c2", true)
	if _, err := s.UpdateRecord(ctx, "g2", func(cur *runtime.RuntimeRecord, at time.Time) (runtime.RuntimeRecord, outbox.TransitionDetails, error) {
		next, err := cur.Start("c2-new", "engine:1", at)
		return next, outbox.TransitionDetails{Reason: outbox.ReasonJobStart}, err
	}); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.StillExpired(ctx, rec2, s.Now().Add(time.Hour)); err != nil || ok {
		t.Fatalf("a restarted record is still expired: %v %v", ok, err)
	}
	if _, err := s.CommitCleanup(ctx, rec2); !errors.Is(err, db.ErrRecordMoved) {
		t.Fatalf("commit cleanup of a restarted record: want ErrRecordMoved, got %v", err)
	}
	if got, _ := s.GetRecord(ctx, "g2"); got.Status != runtime.StatusRunning || got.CurrentContainerID != "c2-new" {
		t.Fatalf("restarted record was touched: %+v", got)
	}

	// A game with a job waiting is not expired.
	rec3 := sweepRecord(t, s, "host-a", "g3", "c3", true)
	if _, _, err := s.InsertJob(ctx, db.NewJob{HostID: "host-a", GameID: "g3", Kind: job.KindStart}); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.StillExpired(ctx, rec3, s.Now().Add(time.Hour)); err != nil || ok {
		t.Fatalf("a game with a queued job is still expired: %v %v", ok, err)
	}
}

func TestSweepLocksAreTryLocksPerHost(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()

	a, held, err := s.TryLockHostSweep(ctx, "host-a")
	if err != nil || !held {
		t.Fatalf("first lock of host-a: %v %v", held, err)
	}
	if _, held, err := s.TryLockHostSweep(ctx, "host-a"); err != nil || held {
		t.Fatalf("second lock of host-a: held=%v err=%v, want not held", held, err)
	}
	b, held, err := s.TryLockHostSweep(ctx, "host-b")
	if err != nil || !held {
		t.Fatalf("lock of host-b while host-a is held: %v %v", held, err)
	}
	r, held, err := s.TryLockRetention(ctx)
	if err != nil || !held {
		t.Fatalf("retention lock: %v %v", held, err)
	}
	if _, held, err := s.TryLockRetention(ctx); err != nil || held {
		t.Fatalf("second retention lock: held=%v err=%v", held, err)
	}
	a.Release()
	a.Release() // harmless
	b.Release()
	r.Release()
	a, held, err = s.TryLockHostSweep(ctx, "host-a")
	if err != nil || !held {
		t.Fatalf("lock of host-a after release: %v %v", held, err)
	}
	a.Release()
	if n := s.Pool().Stat().AcquiredConns(); n != 0 {
		t.Fatalf("%d connections still acquired after release", n)
	}
}

func TestDeleteFinishedJobsKeepsRecentAndUnfinished(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()

	insert := func(game string) db.Job {
		j, _, err := s.InsertJob(ctx, db.NewJob{HostID: "host-a", GameID: game, Kind: job.KindStop, IdempotencyKey: "k"})
		if err != nil {
			t.Fatal(err)
		}
		return j
	}
	finish := func(status job.Status) {
		claimed, err := s.ClaimJobs(ctx, "host-a", "agent-1", 10, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		for _, j := range claimed {
			if _, err := s.FinishJob(ctx, j, "agent-1", db.Outcome{Status: status}); err != nil {
				t.Fatal(err)
			}
		}
	}
	old := []db.Job{insert("g1"), insert("g2"), insert("g3")}
	finish(job.StatusSucceeded)
	recent := insert("g4")
	finish(job.StatusCancelled)
	running := insert("g5")
	if claimed, err := s.ClaimJobs(ctx, "host-a", "agent-1", 10, time.Minute); err != nil || len(claimed) != 1 {
		t.Fatalf("claim: %v %v", jobIDs(claimed), err)
	}
	queued := insert("g6")
	backdate := func(col string, ids ...int64) {
		if _, err := s.Pool().Exec(ctx, "UPDATE jobs SET "+col+" = now() - interval '2 hours', created_at = now() - interval '3 hours' WHERE id = ANY($1)", ids); err != nil {
			t.Fatal(err)
		}
	}
	backdate("finished_at", old[0].ID, old[1].ID, old[2].ID)
	backdate("started_at", running.ID, queued.ID)

	n, err := s.DeleteFinishedJobs(ctx, time.Hour, 2) // two batches: 2 + 1
	if err != nil || n != 3 {
		t.Fatalf("deleted %d (err %v), want 3", n, err)
	}
	for _, j := range old {
		if _, err := s.GetJob(ctx, j.ID); !errors.Is(err, db.ErrJobNotFound) {
			t.Fatalf("old finished job %d: %v", j.ID, err)
		}
	}
	for _, j := range []db.Job{recent, running, queued} {
		if _, err := s.GetJob(ctx, j.ID); err != nil {
			t.Fatalf("job %d should stay: %v", j.ID, err)
		}
	}
	if n, err := s.DeleteFinishedJobs(ctx, time.Hour, 2); err != nil || n != 0 {
		t.Fatalf("second run deleted %d (err %v)", n, err)
	}
	if _, err := s.DeleteFinishedJobs(ctx, 0, 2); err == nil {
		t.Fatal("a zero retention was accepted")
	}
	// The idempotency key of a deleted job is forgotten.
	if _, inserted, err := s.InsertJob(ctx, db.NewJob{HostID: "host-a", GameID: "g1", Kind: job.KindStop, IdempotencyKey: "k"}); err != nil || !inserted {
		t.Fatalf("re-insert with a forgotten key: inserted=%v err=%v", inserted, err)
	}
}

func TestDeleteReadOutboxWaitsForEveryConsumer(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()

	for _, g := range []string{"g1", "g2", "g3", "g4", "g5"} {
		sweepRecord(t, s, "host-a", g, "c-"+g, false)
	}
	evs := readEvents(t, s, 5)
	if _, err := s.Pool().Exec(ctx, "UPDATE outbox SET created_at = now() - interval '2 hours'"); err != nil {
		t.Fatal(err)
	}
	sweepRecord(t, s, "host-a", "g6", "c-g6", false) // recent
	all := readEvents(t, s, 6)

	slow, err := s.RegisterOutboxConsumer(ctx, "game-master")
	if err != nil || slow.Position != (db.Position{}) {
		t.Fatalf("register: %+v %v", slow, err)
	}
	if _, err := s.RegisterOutboxConsumer(ctx, "audit"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RegisterOutboxConsumer(ctx, " "); err == nil {
		t.Fatal("a blank consumer name was accepted")
	}
	// Nobody has read anything: nothing goes, however old.
	if n, err := s.DeleteReadOutbox(ctx, time.Hour, 100); err != nil || n != 0 {
		t.Fatalf("deleted %d (err %v) before any consumer read", n, err)
	}
	if _, err := s.AdvanceOutboxConsumer(ctx, "game-master", evs[1].Position); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AdvanceOutboxConsumer(ctx, "audit", all[5].Position); err != nil {
		t.Fatal(err)
	}
	// Never backwards.
	if c, err := s.AdvanceOutboxConsumer(ctx, "audit", evs[0].Position); err != nil || c.Position != all[5].Position {
		t.Fatalf("advance backwards: %+v %v", c, err)
	}
	// Registering again keeps the position.
	if c, err := s.RegisterOutboxConsumer(ctx, "audit"); err != nil || c.Position != all[5].Position {
		t.Fatalf("register again: %+v %v", c, err)
	}
	if _, err := s.AdvanceOutboxConsumer(ctx, "nobody", evs[0].Position); !errors.Is(err, db.ErrConsumerNotFound) {
		t.Fatalf("advance unknown consumer: %v", err)
	}

	// Only what the slowest consumer has read (events 0 and 1) goes.
	if n, err := s.DeleteReadOutbox(ctx, time.Hour, 1); err != nil || n != 2 {
		t.Fatalf("deleted %d (err %v), want 2", n, err)
	}
	if got := readEvents(t, s, 4); len(got) != 4 || got[0].Position != evs[2].Position {
		t.Fatalf("left: %+v", got)
	}

	// Without the slow consumer, by what audit read and by age: the
	// recent event stays although audit has read it.
	if err := s.UnregisterOutboxConsumer(ctx, "game-master"); err != nil {
		t.Fatal(err)
	}
	if err := s.UnregisterOutboxConsumer(ctx, "game-master"); !errors.Is(err, db.ErrConsumerNotFound) {
		t.Fatalf("unregister twice: %v", err)
	}
	if n, err := s.DeleteReadOutbox(ctx, time.Hour, 100); err != nil || n != 3 {
		t.Fatalf("deleted %d (err %v), want 3", n, err)
	}
	if got := readEvents(t, s, 1); len(got) != 1 || got[0].Position != all[5].Position {
		t.Fatalf("left: %+v", got)
	}
	cs, err := s.ListOutboxConsumers(ctx)
	if err != nil || len(cs) != 1 || cs[0].Name != "audit" {
		t.Fatalf("consumers: %+v %v", cs, err)
	}
}

func TestDeleteReadOutboxByAgeWithoutConsumers(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	sweepRecord(t, s, "host-a", "g1", "c1", true) // two events
	readEvents(t, s, 2)
	if _, err := s.Pool().Exec(ctx, "UPDATE outbox SET created_at = now() - interval '2 hours'"); err != nil {
		t.Fatal(err)
	}
	sweepRecord(t, s, "host-a", "g2", "c2", false)
	if n, err := s.DeleteReadOutbox(ctx, time.Hour, 100); err != nil || n != 2 {
		t.Fatalf("deleted %d (err %v), want 2", n, err)
	}
	if got := readEvents(t, s, 1); len(got) != 1 || got[0].GameID != "g2" {
		t.Fatalf("left: %+v", got)
	}
}
