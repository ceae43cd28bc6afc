package worker_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/galaxy/rtmanager/agent/worker"
	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/domain/job"
	"github.com/galaxy/rtmanager/internal/domain/outbox"
	"github.com/galaxy/rtmanager/internal/testutil/wait"
)

// idleConfig is testConfig with the queue poll and the lease rescue (after
// each of which the worker claims) an hour away, so that within a test
// only a notification, a finished job or the due timer can make the worker
// look at the queue.
func idleConfig(owner string) worker.Config {
	cfg := testConfig(owner)
	cfg.PollInterval = time.Hour
	cfg.RescueInterval = time.Hour
	return cfg
}

// insertIn enqueues a stop job due after in (a PostgreSQL interval, on the
// database's clock) with plain SQL, and returns its id and run_after.
func insertIn(t testing.TB, s *db.Store, gameID, in string) (int64, time.Time) {
	t.Helper()
	var id int64
	var runAfter time.Time
	err := s.Pool().QueryRow(context.Background(),
		`INSERT INTO jobs (host_id, game_id, kind, run_after) VALUES ($1, $2, 'stop', now() + $3::interval) RETURNING id, run_after`,
		hostID, gameID, in).Scan(&id, &runAfter)
	if err != nil {
		t.Fatalf("insert job: %v", err)
	}
	return id, runAfter
}

// gmCancel asks for a cancel exactly as the README's Game Master contract
// says, and checks that it took.
func gmCancel(t testing.TB, s *db.Store, id int64) {
	t.Helper()
	tag, err := s.Pool().Exec(context.Background(),
		`UPDATE jobs SET cancel_requested_at = now() WHERE id = $1 AND finished_at IS NULL`, id)
	if err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("cancel request of job %d: %v, %v", id, tag, err)
	}
}

// settle waits until the worker listens and has been through a claim since:
// a job due now runs. After it, nothing is pending for the worker.
func settle(t testing.TB, s *db.Store, w *worker.Worker) {
	t.Helper()
	wait.For(t, 10*time.Second, "LISTEN connection", w.Listening)
	id := insert(t, s, "settle", "stop", `{}`, 0)
	waitStatus(t, s, id, job.StatusSucceeded)
}

// notBefore checks that job id was claimed at or after its run_after, both
// on the database's clock.
func notBefore(t testing.TB, j db.Job, runAfter time.Time) {
	t.Helper()
	if j.StartedAt == nil || j.StartedAt.Before(runAfter) {
		t.Fatalf("job %d claimed at %v, before its run_after %v", j.ID, j.StartedAt, runAfter)
	}
}

// TestScheduledJobRunsWhenDueWithListen: a job inserted to run 1.5 s ahead
// runs then, not before, though nothing else happens: no insert, no poll
// (an hour away), no rescue. Only the worker's due timer, armed by the claim
// its insert's notification caused, can have made it run.
func TestScheduledJobRunsWhenDueWithListen(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	w := worker.New(s, worker.Noop, idleConfig("owner-1"))
	startWorker(t, w)
	settle(t, s, w)
	id, runAfter := insertIn(t, s, "g1", "1.5 seconds")
	j := waitStatus(t, s, id, job.StatusSucceeded)
	notBefore(t, j, runAfter)
	if j.Attempt != 1 {
		t.Fatalf("job %+v: one attempt expected", j)
	}
}

// TestScheduledJobRunsWhenDueWithoutListen: the same without LISTEN, with
// a short poll (a transaction pooler's set-up).
func TestScheduledJobRunsWhenDueWithoutListen(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	cfg := testConfig("owner-1")
	cfg.UseListen = false
	cfg.PollInterval = 50 * time.Millisecond
	w := worker.New(s, worker.Noop, cfg)
	startWorker(t, w)
	id, runAfter := insertIn(t, s, "g1", "1.5 seconds")
	j := waitStatus(t, s, id, job.StatusSucceeded)
	notBefore(t, j, runAfter)
	if w.Listening() {
		t.Fatal("listening with UseListen false")
	}
}

// TestScheduledJobSeenOnceRunsWhenDueWithoutListenOrPoll: without LISTEN
// and with the poll an hour away, a job the worker has seen at its start
// still runs when it falls due: the timer does not need notifications.
func TestScheduledJobSeenOnceRunsWhenDueWithoutListenOrPoll(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	cfg := idleConfig("owner-1")
	cfg.UseListen = false
	id, runAfter := insertIn(t, s, "g1", "1.5 seconds")
	startWorker(t, worker.New(s, worker.Noop, cfg))
	j := waitStatus(t, s, id, job.StatusSucceeded)
	notBefore(t, j, runAfter)
}

// TestRetryRunsAfterItsBackoffWithoutPolling: a failed attempt's retry is
// due after its backoff (set in run_after); it runs then, with the poll
// and the rescue an hour away.
func TestRetryRunsAfterItsBackoffWithoutPolling(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	var calls atomic.Int64
	exec := worker.ExecutorFunc(func(_ context.Context, task worker.Task) (worker.Result, error) {
		calls.Add(1)
		if task.Job.GameID == "g1" && task.Job.Attempt == 1 {
			return worker.Result{}, errors.New("daemon busy")
		}
		return worker.Result{}, nil
	})
	cfg := idleConfig("owner-1")
	cfg.RetryBaseDelay, cfg.RetryMaxDelay = 800*time.Millisecond, 800*time.Millisecond // 400–800 ms
	w := worker.New(s, exec, cfg)
	startWorker(t, w)
	settle(t, s, w)
	id := insert(t, s, "g1", "stop", `{}`, 0)
	j := waitStatus(t, s, id, job.StatusSucceeded)
	if j.Attempt != 2 || calls.Load() != 3 { // settle's job, two attempts
		t.Fatalf("job %+v, executor calls %d", j, calls.Load())
	}
	if !j.RunAfter.After(j.CreatedAt) {
		t.Fatalf("job %+v: the retry must have moved run_after", j)
	}
	notBefore(t, j, j.RunAfter)
}

// TestGameMasterCancelOfFutureJobTakesEffectAtOnce: a queued job due in an
// hour, cancelled with the Game Master's plain UPDATE, ends cancelled with
// exactly one job.cancelled event without waiting for its run_after, and
// the game's next job, which it held back, then runs.
func TestGameMasterCancelOfFutureJobTakesEffectAtOnce(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	w := worker.New(s, worker.Noop, idleConfig("owner-1"))
	startWorker(t, w)
	settle(t, s, w)
	future, _ := insertIn(t, s, "g1", "1 hour")
	next := insert(t, s, "g1", "stop", `{}`, 0)
	wait.For(t, 10*time.Second, "the inserts' wake-ups", func() bool { return w.Stats().Wakeups >= 3 })
	if j, _ := s.GetJob(context.Background(), next); j.Status != job.StatusQueued {
		t.Fatalf("job %+v ran before the game's earlier job", j)
	}
	gmCancel(t, s, future)
	checkCancelledThenNextRan(t, s, future, next)
	wait.For(t, 10*time.Second, "the cancel counted", func() bool { return w.Stats().Cancelled == 1 })
}

// TestGameMasterCancelWhileAgentDown: a job whose cancel was asked for
// while no agent ran is cancelled when the agent starts, whatever its
// run_after, and the game's next job runs.
func TestGameMasterCancelWhileAgentDown(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	future, _ := insertIn(t, s, "g1", "1 hour")
	next := insert(t, s, "g1", "stop", `{}`, 0)
	gmCancel(t, s, future)
	startWorker(t, worker.New(s, worker.Noop, idleConfig("owner-1")))
	checkCancelledThenNextRan(t, s, future, next)
}

// TestGameMasterCancelWithoutListen: polling sees the cancel request.
func TestGameMasterCancelWithoutListen(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	cfg := testConfig("owner-1")
	cfg.UseListen = false
	cfg.PollInterval = 50 * time.Millisecond
	w := worker.New(s, worker.Noop, cfg)
	startWorker(t, w)
	future, _ := insertIn(t, s, "g1", "1 hour")
	next := insert(t, s, "g1", "stop", `{}`, 0)
	gmCancel(t, s, future)
	checkCancelledThenNextRan(t, s, future, next)
}

// TestGameMasterCancelWhileEverySlotIsBusy: with its one slot taken by a
// long job, the worker still cancels a queued job at once.
func TestGameMasterCancelWhileEverySlotIsBusy(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	exec := newBlockingExec()
	cfg := idleConfig("owner-1")
	cfg.Concurrency = 1
	cfg.DrainTimeout = 50 * time.Millisecond // the busy job never ends by itself
	w := worker.New(s, exec, cfg)
	startWorker(t, w)
	wait.For(t, 10*time.Second, "LISTEN connection", w.Listening)
	busy := insert(t, s, "g0", "stop", `{}`, 0)
	if got := <-exec.started; got != busy {
		t.Fatalf("started job %d, want %d", got, busy)
	}
	future, _ := insertIn(t, s, "g1", "1 hour")
	gmCancel(t, s, future)
	waitStatus(t, s, future, job.StatusCancelled)
	if j, _ := s.GetJob(context.Background(), busy); j.Status != job.StatusRunning {
		t.Fatalf("busy job %+v: it must still be running", j)
	}
	if got := outcomeEvents(t, s, future); len(got) != 1 || got[0] != outbox.TypeJobCancelled {
		t.Fatalf("outcome events %v", got)
	}
}

// checkCancelledThenNextRan waits for cancelled to end cancelled and next
// (the same game's following job) to succeed, and checks there is exactly
// one outcome event each, the cancel's first in the outbox's order.
func checkCancelledThenNextRan(t *testing.T, s *db.Store, cancelled, next int64) {
	t.Helper()
	j := waitStatus(t, s, cancelled, job.StatusCancelled)
	if j.Attempt != 0 || j.StartedAt != nil || j.LastError != "" || j.CancelRequestedAt == nil || j.FinishedAt == nil {
		t.Fatalf("cancelled job %+v: it must never have started", j)
	}
	waitStatus(t, s, next, job.StatusSucceeded)
	if got := outcomeEvents(t, s, cancelled); len(got) != 1 || got[0] != outbox.TypeJobCancelled {
		t.Fatalf("outcome events of the cancelled job: %v", got)
	}
	if got := outcomeEvents(t, s, next); len(got) != 1 || got[0] != outbox.TypeJobSucceeded {
		t.Fatalf("outcome events of the next job: %v", got)
	}
	var order []int64
	rows, err := s.Pool().Query(context.Background(),
		`SELECT job_id FROM outbox WHERE job_id = ANY($1) ORDER BY xid, id`, []int64{cancelled, next})
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		order = append(order, id)
	}
	if fmt.Sprint(order) != fmt.Sprint([]int64{cancelled, next}) {
		t.Fatalf("outbox order %v; want the cancel first", order)
	}
}
