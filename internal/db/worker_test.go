package db_test

import (
	"context"
	"errors"
	"testing"
	"time"

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
