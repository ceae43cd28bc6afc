package db_test

import (
	"context"
	"testing"
	"time"

	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/domain/job"
	"github.com/galaxy/rtmanager/internal/domain/outbox"
	"github.com/galaxy/rtmanager/internal/domain/runtime"
)

func TestReportOrphanOnceAndOnlyWhenOrphan(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

	// g1's record (host-a) is bound to c1.
	if _, err := s.UpdateRecord(ctx, "g1", createRunning("c1")); err != nil {
		t.Fatal(err)
	}
	report := func(gameID, containerID string) (bool, db.OrphanCheck) {
		t.Helper()
		wrote, check, err := s.ReportOrphan(ctx, outbox.OrphanPayload{HostID: "host-a", GameID: gameID, ContainerID: containerID, ContainerName: "n", At: at})
		if err != nil {
			t.Fatal(err)
		}
		return wrote, check
	}

	if wrote, check := report("g1", "c1"); wrote || !check.Owned || check.Orphan() {
		t.Errorf("owned container: wrote %v, check %+v", wrote, check)
	}
	if wrote, check := report("g1", "c2"); !wrote || !check.Orphan() {
		t.Errorf("second container of g1: wrote %v, check %+v", wrote, check)
	}
	if wrote, _ := report("g1", "c2"); wrote {
		t.Errorf("reported twice")
	}
	if wrote, _ := report("", "c3"); !wrote {
		t.Errorf("container without a game label not reported")
	}

	// A queued or running job of the game holds its containers.
	if _, _, err := s.InsertJob(ctx, db.NewJob{HostID: "host-a", GameID: "g2", Kind: job.KindStart, Payload: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	if wrote, check := report("g2", "c4"); wrote || !check.JobActive {
		t.Errorf("container of a game with a queued job: wrote %v, check %+v", wrote, check)
	}
	if check, err := s.CheckOrphan(ctx, "host-b", "g2", "c4"); err != nil || !check.Orphan() {
		t.Errorf("another host's job counts: %+v, %v", check, err)
	}
	if check, err := s.CheckOrphan(ctx, "host-b", "g1", "c1"); err != nil || check.Owned {
		t.Errorf("another host's record counts: %+v, %v", check, err)
	}

	evs := readEvents(t, s, 3)
	var orphans int
	for _, ev := range evs {
		if ev.Type == outbox.TypeContainerOrphaned {
			orphans++
		}
	}
	if orphans != 2 {
		t.Errorf("%d orphan events, want 2", orphans)
	}
}

// TestRepairRecordYieldsToAJobClaimedMeanwhile: a job claimed after the
// reconciler looked at Docker but before it commits (here: inside decide)
// makes the repair yield, with nothing written; once no job runs, the same
// repair commits.
func TestRepairRecordYieldsToAJobClaimedMeanwhile(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	if _, err := s.UpdateRecord(ctx, "g1", createRunning("c1")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.InsertJob(ctx, db.NewJob{HostID: "host-a", GameID: "g1", Kind: job.KindStop}); err != nil {
		t.Fatal(err)
	}
	var claimed []db.Job
	repair := func(claim bool) db.Decision {
		return func(cur *runtime.RuntimeRecord, at time.Time) (runtime.RuntimeRecord, outbox.TransitionDetails, error) {
			if claim {
				var err error
				if claimed, err = s.ClaimJobs(ctx, "host-a", "owner-1", 1, time.Minute); err != nil || len(claimed) != 1 {
					t.Fatalf("claim inside the repair: %d jobs, %v", len(claimed), err)
				}
			}
			next, err := cur.Stop("c1", at)
			return next, outbox.TransitionDetails{Reason: outbox.ReasonReconcileExit}, err
		}
	}
	ch, busy, err := s.RepairRecord(ctx, "host-a", "g1", repair(true))
	if err != nil || !busy || ch.Changed {
		t.Fatalf("repair while a job was claimed: change %+v, busy %v, err %v; want busy and unchanged", ch, busy, err)
	}
	if rec, _ := s.GetRecord(ctx, "g1"); rec.Status != runtime.StatusRunning {
		t.Fatalf("record after the yielded repair: %+v", rec)
	}
	if _, err := s.ReleaseJob(ctx, claimed[0], "owner-1"); err != nil {
		t.Fatal(err)
	}
	ch, busy, err = s.RepairRecord(ctx, "host-a", "g1", repair(false))
	if err != nil || busy || !ch.Changed || ch.Record.Status != runtime.StatusStopped {
		t.Fatalf("repair with no job running: change %+v, busy %v, err %v", ch, busy, err)
	}
}
