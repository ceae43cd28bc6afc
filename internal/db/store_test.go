package db_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/domain/job"
	"github.com/galaxy/rtmanager/internal/domain/outbox"
	"github.com/galaxy/rtmanager/internal/domain/runtime"
	"github.com/galaxy/rtmanager/internal/testutil/pgtest"
	"github.com/galaxy/rtmanager/internal/testutil/wait"
)

func newStore(t *testing.T) *db.Store {
	t.Helper()
	return db.NewStore(pgtest.Pool(t), nil)
}

func placement(gameID string) runtime.Placement {
	return runtime.Placement{
		GameID: gameID, HostID: "host-a",
		EngineEndpoint: runtime.EngineEndpointFor(gameID),
		StatePath:      "/srv/state/" + gameID, DockerNetwork: "galaxy",
	}
}

func createRunning(containerID string) db.Decision {
	return func(cur *runtime.RuntimeRecord, at time.Time) (runtime.RuntimeRecord, outbox.TransitionDetails, error) {
		r, err := runtime.Create(placement("g1"), containerID, "engine:1", at)
		return r, outbox.TransitionDetails{Reason: outbox.ReasonJobStart}, err
	}
}

func stopObserved(containerID string, exitCode int) db.Decision {
	return func(cur *runtime.RuntimeRecord, at time.Time) (runtime.RuntimeRecord, outbox.TransitionDetails, error) {
		if cur == nil {
			return runtime.RuntimeRecord{}, outbox.TransitionDetails{}, runtime.ErrNotFound
		}
		next, err := cur.Stop(containerID, at)
		return next, outbox.TransitionDetails{Reason: outbox.ReasonObservedDie, ExitCode: &exitCode}, err
	}
}

// readEvents returns the outbox once at least want events are readable.
// Committed events become readable when every transaction older than them
// has finished, in any database of the cluster: the tests of other packages
// and of this one run transactions alongside, so the reader waits.
func readEvents(t *testing.T, s *db.Store, want int) []db.StoredEvent {
	t.Helper()
	var evs []db.StoredEvent
	wait.For(t, 30*time.Second, fmt.Sprintf("%d readable outbox events", want), func() bool {
		var err error
		if evs, err = s.ReadOutbox(context.Background(), db.Position{}, 10_000); err != nil {
			t.Fatal(err)
		}
		return len(evs) >= want
	})
	return evs
}

func TestUpdateRecordWritesRecordAndEventTogether(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()

	ch, err := s.UpdateRecord(ctx, "g1", createRunning("c1"))
	if err != nil {
		t.Fatal(err)
	}
	if !ch.Changed || ch.EventID == 0 || ch.Record.Status != runtime.StatusRunning {
		t.Fatalf("create: got %+v", ch)
	}
	got, err := s.GetRecord(ctx, "g1")
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(ch.Record) {
		t.Fatalf("record read back differs:\n got %+v\nwant %+v", got, ch.Record)
	}

	// The same observed die twice: one change, one event.
	for i := 0; i < 2; i++ {
		ch, err = s.UpdateRecord(ctx, "g1", stopObserved("c1", 137))
		if err != nil {
			t.Fatal(err)
		}
		if ch.Changed != (i == 0) {
			t.Fatalf("apply %d: changed=%v", i, ch.Changed)
		}
	}
	evs := readEvents(t, s, 2)
	if len(evs) != 2 {
		t.Fatalf("want 2 events (running, stopped), got %d", len(evs))
	}
	if evs[0].Type != outbox.TypeRuntimeRunning || evs[1].Type != outbox.TypeRuntimeStopped {
		t.Fatalf("event types %s, %s", evs[0].Type, evs[1].Type)
	}
	var p outbox.RuntimePayload
	if err := json.Unmarshal(evs[1].Payload, &p); err != nil {
		t.Fatal(err)
	}
	if p.ExitCode == nil || *p.ExitCode != 137 || p.Reason != outbox.ReasonObservedDie || p.FromStatus != "running" {
		t.Fatalf("stopped payload: %+v", p)
	}
}

func TestUpdateRecordRefusalWritesNothing(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	if _, err := s.UpdateRecord(ctx, "g1", createRunning("c1")); err != nil {
		t.Fatal(err)
	}
	// An event of a container that is no longer the record's.
	_, err := s.UpdateRecord(ctx, "g1", stopObserved("old-container", 0))
	if !errors.Is(err, runtime.ErrStaleContainer) {
		t.Fatalf("want ErrStaleContainer, got %v", err)
	}
	// A decision that returns an invalid record is refused by the store.
	_, err = s.UpdateRecord(ctx, "g1", func(cur *runtime.RuntimeRecord, at time.Time) (runtime.RuntimeRecord, outbox.TransitionDetails, error) {
		bad := *cur
		bad.Status = runtime.StatusStopped // without stopped_at
		return bad, outbox.TransitionDetails{Reason: outbox.ReasonObservedDie}, nil
	})
	if err == nil {
		t.Fatal("an invalid record was written")
	}
	rec, err := s.GetRecord(ctx, "g1")
	if err != nil {
		t.Fatal(err)
	}
	if rec.Status != runtime.StatusRunning {
		t.Fatalf("record changed to %s", rec.Status)
	}
	if n := len(readEvents(t, s, 1)); n != 1 {
		t.Fatalf("want only the create event, got %d events", n)
	}
	if _, err := s.GetRecord(ctx, "nope"); !errors.Is(err, runtime.ErrNotFound) {
		t.Fatalf("want ErrNotFound, got %v", err)
	}
}

func TestInsertJobIdempotencyKey(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	nj := db.NewJob{HostID: "host-a", GameID: "g1", Kind: job.KindStart, Payload: []byte(`{"image_ref":"engine:1"}`), IdempotencyKey: "k1"}
	first, inserted, err := s.InsertJob(ctx, nj)
	if err != nil || !inserted {
		t.Fatalf("first insert: inserted=%v err=%v", inserted, err)
	}
	second, inserted, err := s.InsertJob(ctx, nj)
	if err != nil || inserted || second.ID != first.ID {
		t.Fatalf("second insert: inserted=%v id=%d (first %d) err=%v", inserted, second.ID, first.ID, err)
	}
	// Without a key, or for another game, the same insert is a new job.
	nj.IdempotencyKey = ""
	if _, inserted, err := s.InsertJob(ctx, nj); err != nil || !inserted {
		t.Fatalf("insert without key: inserted=%v err=%v", inserted, err)
	}
	nj.IdempotencyKey, nj.GameID = "k1", "g2"
	if _, inserted, err := s.InsertJob(ctx, nj); err != nil || !inserted {
		t.Fatalf("same key, other game: inserted=%v err=%v", inserted, err)
	}
}

func TestClaimKeepsPerGameFIFOAndHost(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	var ids []int64
	for _, g := range []string{"g1", "g2", "g1", "g2", "g1"} {
		j, _, err := s.InsertJob(ctx, db.NewJob{HostID: "host-a", GameID: g, Kind: job.KindStop})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, j.ID)
	}
	if _, _, err := s.InsertJob(ctx, db.NewJob{HostID: "host-b", GameID: "g9", Kind: job.KindStop}); err != nil {
		t.Fatal(err)
	}

	claimed, err := s.ClaimJobs(ctx, "host-a", "agent-1", 10, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// Only the head of each game's line: the first g1 and the first g2 job.
	if len(claimed) != 2 || claimed[0].ID != ids[0] || claimed[1].ID != ids[1] {
		t.Fatalf("claimed %v, want jobs %d and %d", jobIDs(claimed), ids[0], ids[1])
	}
	for _, j := range claimed {
		if j.Status != job.StatusRunning || j.LeaseOwner != "agent-1" || j.Attempt != 1 || j.LeaseExpiresAt == nil {
			t.Fatalf("claimed job not leased: %+v", j)
		}
	}
	// Nothing else is due while the heads run.
	if more, err := s.ClaimJobs(ctx, "host-a", "agent-1", 10, time.Minute); err != nil || len(more) != 0 {
		t.Fatalf("claimed behind a running head: %v %v", jobIDs(more), err)
	}
	if _, err := s.FinishJob(ctx, claimed[0], "agent-1", db.Outcome{Status: job.StatusSucceeded}); err != nil {
		t.Fatal(err)
	}
	next, err := s.ClaimJobs(ctx, "host-a", "agent-1", 10, time.Minute)
	if err != nil || len(next) != 1 || next[0].ID != ids[2] {
		t.Fatalf("after finishing g1's head, claimed %v, want %d (err %v)", jobIDs(next), ids[2], err)
	}
}

func TestFinishJobNeedsTheLeaseAndWritesOutcome(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	j, _, err := s.InsertJob(ctx, db.NewJob{HostID: "host-a", GameID: "g1", Kind: job.KindStart})
	if err != nil {
		t.Fatal(err)
	}
	claimed, err := s.ClaimJobs(ctx, "host-a", "agent-1", 1, time.Minute)
	if err != nil || len(claimed) != 1 {
		t.Fatalf("claim: %v %v", claimed, err)
	}
	if _, err := s.FinishJob(ctx, claimed[0], "agent-2", db.Outcome{Status: job.StatusSucceeded}); !errors.Is(err, db.ErrLeaseLost) {
		t.Fatalf("another owner finished the job: %v", err)
	}
	// A decision that fails rolls the whole finish back.
	_, err = s.FinishJob(ctx, claimed[0], "agent-1", db.Outcome{Status: job.StatusSucceeded, Record: stopObserved("c1", 0)})
	if !errors.Is(err, runtime.ErrNotFound) {
		t.Fatalf("want the decision's error, got %v", err)
	}
	if got, _ := s.GetJob(ctx, j.ID); got.Status != job.StatusRunning {
		t.Fatalf("job finished although its record transition failed: %s", got.Status)
	}
	ch, err := s.FinishJob(ctx, claimed[0], "agent-1", db.Outcome{Status: job.StatusSucceeded, Record: createRunning("c1")})
	if err != nil || !ch.Changed {
		t.Fatalf("finish: %+v %v", ch, err)
	}
	got, err := s.GetJob(ctx, j.ID)
	if err != nil || got.Status != job.StatusSucceeded || got.FinishedAt == nil || got.LeaseOwner != "" {
		t.Fatalf("finished job: %+v %v", got, err)
	}
	evs := readEvents(t, s, 2)
	if len(evs) != 2 || evs[0].Type != outbox.TypeRuntimeRunning || evs[1].Type != outbox.TypeJobSucceeded || evs[1].JobID != j.ID {
		t.Fatalf("events: %+v", evs)
	}
	if _, err := s.FinishJob(ctx, claimed[0], "agent-1", db.Outcome{Status: job.StatusFailed}); !errors.Is(err, db.ErrLeaseLost) {
		t.Fatalf("a finished job was finished again: %v", err)
	}
}

func TestRetryAndExpiredLeases(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	if _, _, err := s.InsertJob(ctx, db.NewJob{HostID: "host-a", GameID: "g1", Kind: job.KindStop}); err != nil {
		t.Fatal(err)
	}
	claimed, err := s.ClaimJobs(ctx, "host-a", "agent-1", 1, time.Minute)
	if err != nil || len(claimed) != 1 {
		t.Fatalf("claim: %v", err)
	}
	held, err := s.ExtendLeases(ctx, "agent-1", []int64{claimed[0].ID}, time.Minute)
	if err != nil || len(held) != 1 {
		t.Fatalf("extend: %v %v", held, err)
	}
	if _, err := s.RetryJob(ctx, claimed[0], "agent-1", 0, "docker said no"); err != nil {
		t.Fatal(err)
	}
	again, err := s.ClaimJobs(ctx, "host-a", "agent-2", 1, -time.Second) // a lease already expired
	if err != nil || len(again) != 1 || again[0].Attempt != 2 || again[0].LastError != "docker said no" {
		t.Fatalf("retry claim: %+v %v", again, err)
	}
	ids, err := s.RequeueExpiredLeases(ctx, "host-a")
	if err != nil || len(ids) != 1 || ids[0] != again[0].ID {
		t.Fatalf("requeue expired: %v %v", ids, err)
	}
	if held, err := s.ExtendLeases(ctx, "agent-2", ids, time.Minute); err != nil || len(held) != 0 {
		t.Fatalf("an expired lease was extended: %v %v", held, err)
	}
	j, _ := s.GetJob(ctx, ids[0])
	if j.Status != job.StatusQueued || j.LeaseOwner != "" {
		t.Fatalf("requeued job: %+v", j)
	}
}

// TestOutboxReaderSeesEveryEventOnceInOrder runs many concurrent writers
// while a reader pages through the outbox, and checks that the reader sees
// every event exactly once and each game's events in commit order.
func TestOutboxReaderSeesEveryEventOnceInOrder(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	const games, steps = 20, 10

	var wg sync.WaitGroup
	for g := 0; g < games; g++ {
		gameID := fmt.Sprintf("game-%d", g)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < steps; i++ {
				container := fmt.Sprintf("c%d", i)
				_, err := s.UpdateRecord(ctx, gameID, func(cur *runtime.RuntimeRecord, at time.Time) (runtime.RuntimeRecord, outbox.TransitionDetails, error) {
					if cur == nil {
						r, err := runtime.Create(placement(gameID), container, "engine:1", at)
						return r, outbox.TransitionDetails{Reason: outbox.ReasonJobStart}, err
					}
					r, err := cur.ChangeImage(container, fmt.Sprintf("engine:%d", i), at)
					return r, outbox.TransitionDetails{Reason: outbox.ReasonJobChangeImage}, err
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()

	seen := map[int64]bool{}
	lastContainer := map[string]int{}
	var pos db.Position
	deadline := time.After(time.Minute)
	for finished := false; !finished || len(seen) < games*steps; {
		evs, err := s.ReadOutbox(ctx, pos, 7)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			if seen[ev.ID] {
				t.Fatalf("event %d seen twice", ev.ID)
			}
			seen[ev.ID] = true
			var p outbox.RuntimePayload
			if err := json.Unmarshal(ev.Payload, &p); err != nil {
				t.Fatal(err)
			}
			var n int
			fmt.Sscanf(p.ContainerID, "c%d", &n)
			if prev, ok := lastContainer[ev.GameID]; ok && n != prev+1 {
				t.Fatalf("game %s: event for c%d after c%d", ev.GameID, n, prev)
			}
			lastContainer[ev.GameID] = n
			pos = ev.Position
		}
		select {
		case <-done:
			finished = true
		case <-deadline:
			t.Fatalf("after a minute the reader had seen %d of %d events", len(seen), games*steps)
		default:
		}
	}
	if len(seen) != games*steps {
		t.Fatalf("reader saw %d events, want %d", len(seen), games*steps)
	}
}

func TestHostRegistrationAndCursor(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	if _, err := s.RegisterHost(ctx, "host-a", "agent-1", "test"); err != nil {
		t.Fatal(err)
	}
	if err := s.Heartbeat(ctx, "host-a", "agent-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RegisterHost(ctx, "host-a", "agent-2", "test"); err != nil {
		t.Fatal(err)
	}
	if err := s.Heartbeat(ctx, "host-a", "agent-1"); !errors.Is(err, db.ErrHostTaken) {
		t.Fatalf("replaced agent kept heartbeating: %v", err)
	}
	for _, n := range []int64{200, 100} {
		if err := s.AdvanceEventCursor(ctx, "host-a", n); err != nil {
			t.Fatal(err)
		}
	}
	h, err := s.GetHost(ctx, "host-a")
	if err != nil || h.EventCursorNanos != 200 || h.AgentID != "agent-2" {
		t.Fatalf("host: %+v %v", h, err)
	}
	if _, err := s.GetHost(ctx, "host-z"); !errors.Is(err, db.ErrHostNotFound) {
		t.Fatalf("want ErrHostNotFound, got %v", err)
	}
}

func jobIDs(js []db.Job) []int64 {
	out := make([]int64, len(js))
	for i, j := range js {
		out[i] = j.ID
	}
	return out
}
