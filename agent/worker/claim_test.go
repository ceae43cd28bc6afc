package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/galaxy/rtmanager/agent/worker"
	"github.com/galaxy/rtmanager/internal/domain/job"
	"github.com/galaxy/rtmanager/internal/domain/outbox"
	"github.com/galaxy/rtmanager/internal/testutil/wait"
)

// TestJobQueuedDuringAClaimIsClaimedBesideIt: a job queued while the claim
// loop's statement runs is claimed beside it, by a side claim, not after
// it. The loop's claim is held on the server: claiming the game "held"
// waits for an advisory lock the test holds, so without the side claim
// the other job would wait for the lock too.
func TestJobQueuedDuringAClaimIsClaimedBesideIt(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	if _, err := s.Pool().Exec(ctx, `
CREATE FUNCTION test_held_claim() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(4242);
    RETURN NEW;
END;
$$;
CREATE TRIGGER test_held_claim BEFORE UPDATE ON jobs FOR EACH ROW
    WHEN (OLD.status = 'queued' AND NEW.status = 'running' AND NEW.game_id = 'held')
    EXECUTE FUNCTION test_held_claim()`); err != nil {
		t.Fatal(err)
	}
	lock, err := s.Pool().Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Release()
	if _, err := lock.Exec(ctx, "SELECT pg_advisory_lock(4242)"); err != nil {
		t.Fatal(err)
	}
	locked := true
	defer func() {
		if locked {
			_, _ = lock.Exec(ctx, "SELECT pg_advisory_unlock(4242)")
		}
	}()

	cfg := testConfig("owner-side")
	cfg.PollInterval = time.Hour
	// A claim gives up after a lease: the held one must not, or the loop
	// would claim the other job after it.
	cfg.LeaseDuration, cfg.LeaseRenewInterval = time.Hour, time.Second
	w := worker.New(s, worker.Noop, cfg)
	startWorker(t, w)
	wait.For(t, 10*time.Second, "LISTEN connection", w.Listening)
	// A claim that comes back short leaves slots to a side claim; the
	// first one after the start asks for every slot.
	waitStatus(t, s, insert(t, s, "warm-up", "stop", `{}`, 0), job.StatusSucceeded)

	held := insert(t, s, "held", "stop", `{}`, 0)
	claimHeld := func() bool {
		var n int
		if err := s.Pool().QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND wait_event = 'advisory' AND query LIKE '%ClaimJobs%'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n > 0
	}
	wait.For(t, 10*time.Second, "the claim loop's claim to wait for the test's lock", claimHeld)

	other := insert(t, s, "other", "stop", `{}`, 0)
	waitStatus(t, s, other, job.StatusSucceeded)
	if !claimHeld() {
		t.Fatal("the claim loop's claim no longer waits for the lock: the check proves nothing")
	}
	if j, err := s.GetJob(ctx, held); err != nil || j.Status != job.StatusQueued {
		t.Fatalf("held job: %+v, %v; want it queued while its claim waits", j, err)
	}

	if _, err := lock.Exec(ctx, "SELECT pg_advisory_unlock(4242)"); err != nil {
		t.Fatal(err)
	}
	locked = false
	waitStatus(t, s, held, job.StatusSucceeded)
	for _, id := range []int64{held, other} {
		if got := outcomeEvents(t, s, id); len(got) != 1 || got[0] != outbox.TypeJobSucceeded {
			t.Errorf("job %d: outcome events %v, want one %s", id, got, outbox.TypeJobSucceeded)
		}
	}
}
