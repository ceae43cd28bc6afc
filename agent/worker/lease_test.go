package worker_test

// Leases and the drain: a job whose lease is lost writes nothing, an
// expired lease is requeued, a job that keeps killing its agent fails,
// and a drain lets running jobs finish or gives them back.

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/galaxy/rtmanager/agent/worker"
	"github.com/galaxy/rtmanager/internal/domain/job"
	"github.com/galaxy/rtmanager/internal/testutil/syncbuf"
	"github.com/galaxy/rtmanager/internal/testutil/wait"
)

func TestLostLeaseInterruptsWithoutWriting(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	exec := newBlockingExec()
	w := worker.New(s, exec, testConfig("owner-1"))
	startWorker(t, w)
	id := insert(t, s, "g1", "stop", `{}`, 0)
	<-exec.started
	// Another agent took the job over (as after a long pause of ours).
	if _, err := s.Pool().Exec(context.Background(), `UPDATE jobs SET lease_owner = 'owner-2' WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	if cause := <-exec.causes; cause == nil || !contains(cause.Error(), "lease lost") {
		t.Fatalf("cause %v", cause)
	}
	wait.For(t, 10*time.Second, "lease lost counted", func() bool { return w.Stats().LeaseLost == 1 })
	j, _ := s.GetJob(context.Background(), id)
	if j.Status != job.StatusRunning || j.LeaseOwner != "owner-2" {
		t.Fatalf("job %+v: the worker must leave a job it lost alone", j)
	}
}

// TestLeaseLostBeforeTheFinishWritesNothing: the job's lease goes while
// it runs, unnoticed (no renewal in between), and the executor succeeds.
// The batch finish finds the lease gone: no outcome, no event, and the
// other jobs of the same batch finish.
func TestLeaseLostBeforeTheFinishWritesNothing(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	release := make(chan struct{})
	started := make(chan int64, 4)
	exec := worker.ExecutorFunc(func(ctx context.Context, task worker.Task) (worker.Result, error) {
		started <- task.Job.ID
		<-release
		return worker.Result{}, nil
	})
	cfg := testConfig("owner-1")
	cfg.LeaseDuration, cfg.LeaseRenewInterval = time.Hour, 30*time.Minute
	w := worker.New(s, exec, cfg)
	ids := []int64{insert(t, s, "g1", "stop", `{}`, 0), insert(t, s, "g2", "stop", `{}`, 0), insert(t, s, "g3", "stop", `{}`, 0)}
	startWorker(t, w)
	for range ids {
		<-started
	}
	if _, err := s.Pool().Exec(context.Background(), `UPDATE jobs SET lease_owner = 'owner-2' WHERE id = $1`, ids[1]); err != nil {
		t.Fatal(err)
	}
	close(release)
	waitStatus(t, s, ids[0], job.StatusSucceeded)
	waitStatus(t, s, ids[2], job.StatusSucceeded)
	wait.For(t, 10*time.Second, "lease lost counted", func() bool { return w.Stats().LeaseLost == 1 })
	wait.For(t, 10*time.Second, "the successes counted", func() bool { return w.Stats().Succeeded >= 2 })
	if st := w.Stats(); st.Succeeded != 2 {
		t.Fatalf("stats %+v", st)
	}
	if j, _ := s.GetJob(context.Background(), ids[1]); j.Status != job.StatusRunning || j.LeaseOwner != "owner-2" {
		t.Fatalf("job %+v: the worker must leave a job it lost alone", j)
	}
	for i, id := range ids {
		want := 1
		if i == 1 {
			want = 0
		}
		if got := outcomeEvents(t, s, id); len(got) != want {
			t.Fatalf("job %d: outcome events %v, want %d", id, got, want)
		}
	}
}

func TestRestartedAgentRequeuesExpiredLease(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	id := insert(t, s, "g1", "stop", `{}`, 0)
	// A dead agent claimed it; its lease ran out.
	if _, err := s.Pool().Exec(context.Background(),
		`UPDATE jobs SET status = 'running', attempt = 1, lease_owner = 'dead', lease_expires_at = now() - interval '1 second', started_at = now() WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	w := worker.New(s, worker.Noop, testConfig("owner-1"))
	startWorker(t, w)
	j := waitStatus(t, s, id, job.StatusSucceeded)
	if j.Attempt != 2 || w.Stats().Requeued != 1 {
		t.Fatalf("job %+v, stats %+v", j, w.Stats())
	}
}

// TestFailedRescueIsRetriedSoon: when the rescue at the worker's start
// fails (the database just came back and the connection was terminated),
// it is tried again within a renewal interval or two, not at the next
// RescueInterval (here an hour), so that jobs left running under expired
// leases run again. A statement trigger refuses every UPDATE of jobs,
// the rescue's included, until the test lifts it.
func TestFailedRescueIsRetriedSoon(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	id := insert(t, s, "g1", "stop", `{}`, 0)
	for _, q := range []string{
		`UPDATE jobs SET status = 'running', attempt = 1, lease_owner = 'dead', lease_expires_at = now() - interval '1 second', started_at = now() WHERE id = ` + strconv.FormatInt(id, 10),
		`CREATE TABLE refuse_updates (on_ boolean)`,
		`INSERT INTO refuse_updates VALUES (true)`,
		`CREATE FUNCTION refuse_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM refuse_updates) THEN
        RAISE EXCEPTION 'the test refuses updates of jobs';
    END IF;
    RETURN NULL;
END;
$$`,
		`CREATE TRIGGER refuse_update BEFORE UPDATE ON jobs FOR EACH STATEMENT EXECUTE FUNCTION refuse_update()`,
	} {
		if _, err := s.Pool().Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	var logs syncbuf.Buffer
	cfg := testConfig("owner-1")
	cfg.RescueInterval = time.Hour
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	w := worker.New(s, worker.Noop, cfg)
	startWorker(t, w)
	wait.For(t, 10*time.Second, "the first rescue to fail", func() bool {
		return strings.Contains(logs.String(), "requeueing expired leases failed")
	})
	if _, err := s.Pool().Exec(ctx, `DELETE FROM refuse_updates`); err != nil {
		t.Fatal(err)
	}
	j := waitStatus(t, s, id, job.StatusSucceeded)
	if j.Attempt != 2 || w.Stats().Requeued != 1 {
		t.Fatalf("job %+v, stats %+v", j, w.Stats())
	}
}

// A term of the host lease that ends right after an outcome write failed
// leaves the job under a lease of this agent that outlives the term. The
// next term's worker rescues at its start, before that lease expires; it
// must rescue again once the lease has run out, not at the next periodic
// rescue (TestPostgresRestart found the job running two minutes later).
func TestLeaseLeftByAnEarlierTermIsRescuedWhenItExpires(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	id := insert(t, s, "g1", "stop", `{}`, 0)
	if _, err := s.Pool().Exec(context.Background(),
		`UPDATE jobs SET status = 'running', attempt = 1, lease_owner = 'owner-1', lease_expires_at = now() + interval '1 second', started_at = now() WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig("owner-1")
	cfg.RescueInterval = time.Hour
	w := worker.New(s, worker.Noop, cfg)
	startWorker(t, w)
	j := waitStatus(t, s, id, job.StatusSucceeded)
	if j.Attempt != 2 || w.Stats().Requeued != 1 {
		t.Fatalf("job %+v, stats %+v", j, w.Stats())
	}
}

func TestJobThatKillsItsAgentFailsAfterMaxAttempts(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	id := insert(t, s, "g1", "stop", `{}`, 2)
	if _, err := s.Pool().Exec(context.Background(),
		`UPDATE jobs SET status = 'running', attempt = 2, lease_owner = 'dead', lease_expires_at = now() - interval '1 second', started_at = now() WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int64
	w := worker.New(s, worker.ExecutorFunc(func(context.Context, worker.Task) (worker.Result, error) {
		calls.Add(1)
		return worker.Result{}, nil
	}), testConfig("owner-1"))
	startWorker(t, w)
	j := waitStatus(t, s, id, job.StatusFailed)
	if calls.Load() != 0 || !contains(j.LastError, "out of attempts") {
		t.Fatalf("calls %d, job %+v", calls.Load(), j)
	}
}

func TestDrainReleasesUnfinishedJobs(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	exec := newBlockingExec()
	cfg := testConfig("owner-1")
	cfg.DrainTimeout = 50 * time.Millisecond
	w := worker.New(s, exec, cfg)
	stop := startWorker(t, w)
	id := insert(t, s, "g1", "stop", `{}`, 0)
	<-exec.started
	stop()
	j, err := s.GetJob(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if j.Status != job.StatusQueued || j.Attempt != 0 || j.LeaseOwner != "" || w.Stats().Released != 1 {
		t.Fatalf("job %+v, stats %+v: a drained job goes back to the queue without using an attempt", j, w.Stats())
	}
}

func TestDrainLetsRunningJobsFinish(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	exec := worker.ExecutorFunc(func(ctx context.Context, task worker.Task) (worker.Result, error) {
		started <- struct{}{}
		<-release
		return worker.Result{}, nil
	})
	w := worker.New(s, exec, testConfig("owner-1"))
	stop := startWorker(t, w)
	id := insert(t, s, "g1", "stop", `{}`, 0)
	<-started
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	close(release) // the job finishes while (or just before) Run drains
	<-stopped
	if j, _ := s.GetJob(context.Background(), id); j.Status != job.StatusSucceeded {
		t.Fatalf("job %+v", j)
	}
}
