package db_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/domain/job"
)

func TestReleaseJobGivesBackTheAttempt(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	j, _, err := s.InsertJob(ctx, db.NewJob{HostID: "host-a", GameID: "g1", Kind: job.KindStop})
	if err != nil {
		t.Fatal(err)
	}
	claimed, err := s.ClaimJobs(ctx, "host-a", "owner-1", 10, time.Minute)
	if err != nil || len(claimed) != 1 || claimed[0].Attempt != 1 {
		t.Fatalf("claim: %+v, %v", claimed, err)
	}
	if _, err := s.ReleaseJob(ctx, j, "owner-2"); !errors.Is(err, db.ErrLeaseLost) {
		t.Fatalf("release by a non-owner: %v", err)
	}
	got, err := s.ReleaseJob(ctx, j, "owner-1")
	if err != nil || got.Status != job.StatusQueued || got.Attempt != 0 || got.LeaseOwner != "" || got.LeaseExpiresAt != nil {
		t.Fatalf("release: %+v, %v", got, err)
	}
	again, err := s.ClaimJobs(ctx, "host-a", "owner-2", 10, time.Minute)
	if err != nil || len(again) != 1 || again[0].Attempt != 1 {
		t.Fatalf("claim after release: %+v, %v", again, err)
	}
}

func TestCancelJobOfRunningJobOnlyRequests(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	j, _, err := s.InsertJob(ctx, db.NewJob{HostID: "host-a", GameID: "g1", Kind: job.KindStop})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ClaimJobs(ctx, "host-a", "owner-1", 10, time.Minute); err != nil {
		t.Fatal(err)
	}
	got, err := s.CancelJob(ctx, j.ID)
	if err != nil || got.Status != job.StatusRunning || got.CancelRequestedAt == nil {
		t.Fatalf("cancel of a running job: %+v, %v", got, err)
	}
	held, err := s.ExtendLeases(ctx, "owner-1", []int64{j.ID}, time.Minute)
	if err != nil || !held[j.ID] {
		t.Fatalf("ExtendLeases must report the cancel request: %v, %v", held, err)
	}
	// A queued job is cancelled at once, with its outcome event.
	q, _, err := s.InsertJob(ctx, db.NewJob{HostID: "host-a", GameID: "g2", Kind: job.KindStop})
	if err != nil {
		t.Fatal(err)
	}
	got, err = s.CancelJob(ctx, q.ID)
	if err != nil || got.Status != job.StatusCancelled || got.FinishedAt == nil {
		t.Fatalf("cancel of a queued job: %+v, %v", got, err)
	}
	evs := readEvents(t, s, 1)
	if len(evs) != 1 || evs[0].JobID != q.ID || evs[0].Type != "job.cancelled" {
		t.Fatalf("events %+v", evs)
	}
}

// TestClaimReportsNextDueAndCancelRequests: the claim statement claims
// only due jobs at the head of their game's line and never one whose
// cancel was asked for; it reports the time until the earliest head job
// that is not yet due (a later job of a game does not count, even with an
// earlier run_after) and lists the queued jobs whose cancel was asked for,
// whatever their run_after, also when it claims nothing.
func TestClaimReportsNextDueAndCancelRequests(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	insertIn := func(game, in string) int64 {
		t.Helper()
		var id int64
		if err := s.Pool().QueryRow(ctx,
			`INSERT INTO jobs (host_id, game_id, kind, run_after) VALUES ('host-a', $1, 'stop', now() + $2::interval) RETURNING id`,
			game, in).Scan(&id); err != nil {
			t.Fatal(err)
		}
		return id
	}
	cancelRequest := func(id int64) {
		t.Helper()
		if _, err := s.Pool().Exec(ctx, `UPDATE jobs SET cancel_requested_at = now() WHERE id = $1 AND finished_at IS NULL`, id); err != nil {
			t.Fatal(err)
		}
	}
	insertIn("g1", "1 hour")                        // heads g1
	insertIn("g1", "1 minute")                      // earlier, but behind g1's head
	insertIn("g2", "2 hours")                       // heads g2
	dueCancelled := insertIn("g3", "0")             // due, cancel asked for
	futureCancelled := insertIn("g4", "30 seconds") // not due, cancel asked for
	due := insertIn("g5", "0")
	insertIn("other-host-game", "0")
	if _, err := s.Pool().Exec(ctx, `UPDATE jobs SET host_id = 'host-b' WHERE game_id = 'other-host-game'`); err != nil {
		t.Fatal(err)
	}
	cancelRequest(dueCancelled)
	cancelRequest(futureCancelled)

	c, err := s.Claim(ctx, "host-a", "owner-1", 10, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Jobs) != 1 || c.Jobs[0].ID != due || c.Jobs[0].Status != job.StatusRunning || c.Jobs[0].Attempt != 1 || c.Jobs[0].GameID != "g5" {
		t.Fatalf("claimed %+v; want job %d alone", c.Jobs, due)
	}
	// g1's head is an hour away; its second job (a minute away) waits for
	// it. Minutes apart: no timing is asserted, only which job counts.
	if c.NextDue <= 30*time.Minute || c.NextDue > time.Hour {
		t.Fatalf("next due in %s; want g1's head job (1h)", c.NextDue)
	}
	if len(c.CancelIDs) != 2 || c.CancelIDs[0] != dueCancelled || c.CancelIDs[1] != futureCancelled {
		t.Fatalf("cancel ids %v; want [%d %d]", c.CancelIDs, dueCancelled, futureCancelled)
	}

	// A claim of nothing (every slot busy) still reports both.
	c, err = s.Claim(ctx, "host-a", "owner-1", 0, time.Minute)
	if err != nil || len(c.Jobs) != 0 || c.NextDue <= 30*time.Minute || len(c.CancelIDs) != 2 {
		t.Fatalf("claim of none: %+v, %v", c, err)
	}

	// Cancelled, they are listed no more; with no job in the future the
	// next due time is 0.
	for _, id := range c.CancelIDs {
		if j, err := s.CancelJob(ctx, id); err != nil || j.Status != job.StatusCancelled {
			t.Fatalf("cancel %d: %+v, %v", id, j, err)
		}
	}
	if _, err := s.Pool().Exec(ctx, `DELETE FROM jobs WHERE status = 'queued'`); err != nil {
		t.Fatal(err)
	}
	c, err = s.Claim(ctx, "host-a", "owner-1", 10, time.Minute)
	if err != nil || len(c.Jobs) != 0 || c.NextDue != 0 || len(c.CancelIDs) != 0 {
		t.Fatalf("claim of an empty queue: %+v, %v", c, err)
	}
}

// TestCancelRequestNotifiesTheHost: the Game Master's plain cancel UPDATE
// on a queued job notifies rtm_jobs with the job's host, as an insert
// does; on a running job (seen at its next lease renewal) it does not.
func TestCancelRequestNotifiesTheHost(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	running, _, err := s.InsertJob(ctx, db.NewJob{HostID: "host-r", GameID: "g1", Kind: job.KindStop})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := s.ClaimJobs(ctx, "host-r", "owner-1", 1, time.Minute); err != nil || len(c) != 1 {
		t.Fatalf("claim: %+v, %v", c, err)
	}
	queued, _, err := s.InsertJob(ctx, db.NewJob{HostID: "host-q", GameID: "g2", Kind: job.KindStop, RunAfter: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := s.Pool().Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "LISTEN rtm_jobs"); err != nil {
		t.Fatal(err)
	}
	for _, id := range []int64{running.ID, queued.ID} {
		tag, err := s.Pool().Exec(ctx, `UPDATE jobs SET cancel_requested_at = now() WHERE id = $1 AND finished_at IS NULL`, id)
		if err != nil || tag.RowsAffected() != 1 {
			t.Fatalf("cancel request of job %d: %v, %v", id, tag, err)
		}
	}
	waitCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// Notifications arrive in commit order: the first must be the queued
	// job's, so the running job's request sent none.
	n, err := conn.Conn().WaitForNotification(waitCtx)
	if err != nil || n.Channel != "rtm_jobs" || n.Payload != "host-q" {
		t.Fatalf("notification %+v, %v; want rtm_jobs host-q", n, err)
	}
	if j, err := s.GetJob(ctx, queued.ID); err != nil || j.Status != job.StatusQueued || j.CancelRequestedAt == nil {
		t.Fatalf("the trigger only notifies; the agent cancels: %+v, %v", j, err)
	}
}

// TestRunAfterIsATime: PostgreSQL refuses a run_after of ±infinity (a
// claim could not read the one, nor count down to the other), and a job
// due centuries ahead gives a next due time of at most a day, which a Go
// duration holds.
func TestRunAfterIsATime(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	for _, v := range []string{"infinity", "-infinity"} {
		_, err := s.Pool().Exec(ctx, `INSERT INTO jobs (host_id, game_id, kind, run_after) VALUES ('host-a', 'g1', 'stop', $1::timestamptz)`, v)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "23514" || pgErr.ConstraintName != "jobs_run_after_finite" {
			t.Fatalf("run_after %s: %v; want a check violation of jobs_run_after_finite", v, err)
		}
	}
	if _, err := s.Pool().Exec(ctx, `INSERT INTO jobs (host_id, game_id, kind, run_after) VALUES ('host-a', 'g1', 'stop', now() + interval '1000 years')`); err != nil {
		t.Fatal(err)
	}
	c, err := s.Claim(ctx, "host-a", "owner-1", 10, time.Minute)
	if err != nil || len(c.Jobs) != 0 || c.NextDue != 24*time.Hour {
		t.Fatalf("claim: %+v, %v; want nothing claimed and a next due time of 24h", c, err)
	}
}
