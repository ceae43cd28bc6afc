package db_test

import (
	"context"
	"errors"
	"slices"
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
		wrote, check, err := s.ReportOrphan(ctx, outbox.OrphanPayload{HostID: "host-a", GameID: gameID, ContainerID: containerID, ContainerName: "n", At: at}, nil)
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
	// Given back to the queue (a drain): still in progress, its next
	// attempt records the change.
	if _, err := s.ReleaseJob(ctx, claimed[0], "owner-1"); err != nil {
		t.Fatal(err)
	}
	if ch, busy, err = s.RepairRecord(ctx, "host-a", "g1", repair(false)); err != nil || !busy || ch.Changed {
		t.Fatalf("repair while the job waits for its next attempt: change %+v, busy %v, err %v; want busy", ch, busy, err)
	}
	if claimed, err = s.ClaimJobs(ctx, "host-a", "owner-1", 1, time.Minute); err != nil || len(claimed) != 1 {
		t.Fatalf("claim again: %d jobs, %v", len(claimed), err)
	}
	if _, err := s.FinishJob(ctx, claimed[0], "owner-1", db.Outcome{Status: job.StatusFailed, Error: "gave up"}); err != nil {
		t.Fatal(err)
	}
	ch, busy, err = s.RepairRecord(ctx, "host-a", "g1", repair(false))
	if err != nil || busy || !ch.Changed || ch.Record.Status != runtime.StatusStopped {
		t.Fatalf("repair once the job has finished: change %+v, busy %v, err %v", ch, busy, err)
	}
}

// TestActiveJob: a game's job in progress is its job claimed at least once
// and not finished, on the host asked about; observers get it under the
// game's lock.
func TestActiveJob(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	if _, err := s.UpdateRecord(ctx, "g1", createRunning("c1")); err != nil {
		t.Fatal(err)
	}
	active := func(hostID string) *outbox.ActiveJob {
		t.Helper()
		a, err := s.ActiveJob(ctx, hostID, "g1")
		if err != nil {
			t.Fatal(err)
		}
		var seen *outbox.ActiveJob
		if _, err := s.ObserveRecord(ctx, hostID, "g1", func(cur *runtime.RuntimeRecord, a *outbox.ActiveJob, _ time.Time) (runtime.RuntimeRecord, outbox.TransitionDetails, error) {
			seen = a
			return *cur, outbox.TransitionDetails{}, nil
		}); err != nil {
			t.Fatal(err)
		}
		if (a == nil) != (seen == nil) || (a != nil && *a != *seen) {
			t.Fatalf("ActiveJob %+v, ObserveRecord saw %+v", a, seen)
		}
		return a
	}
	if a := active("host-a"); a != nil {
		t.Fatalf("no job: %+v", a)
	}
	stop, _, err := s.InsertJob(ctx, db.NewJob{HostID: "host-a", GameID: "g1", Kind: job.KindStop})
	if err != nil {
		t.Fatal(err)
	}
	if a := active("host-a"); a != nil {
		t.Fatalf("a job never claimed is not in progress: %+v", a)
	}
	claimed, err := s.ClaimJobs(ctx, "host-a", "owner-1", 1, time.Minute)
	if err != nil || len(claimed) != 1 {
		t.Fatalf("claim: %v, %v", claimed, err)
	}
	want := outbox.ActiveJob{ID: stop.ID, Kind: job.KindStop}
	if a := active("host-a"); a == nil || *a != want {
		t.Fatalf("running job: %+v, want %+v", a, want)
	}
	if a := active("host-b"); a != nil {
		t.Fatalf("another host's view: %+v", a)
	}
	if _, err := s.RetryJob(ctx, claimed[0], "owner-1", time.Hour, "daemon busy"); err != nil {
		t.Fatal(err)
	}
	if a := active("host-a"); a == nil || *a != want {
		t.Fatalf("job waiting for its next attempt: %+v, want %+v", a, want)
	}
	// Its agent died: the lease expired and the job was requeued.
	if _, err := s.Pool().Exec(ctx, `UPDATE jobs SET run_after = now() WHERE id = $1`, stop.ID); err != nil {
		t.Fatal(err)
	}
	if claimed, err = s.ClaimJobs(ctx, "host-a", "owner-1", 1, time.Minute); err != nil || len(claimed) != 1 {
		t.Fatalf("claim again: %v, %v", claimed, err)
	}
	if _, err := s.Pool().Exec(ctx, `UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE id = $1`, stop.ID); err != nil {
		t.Fatal(err)
	}
	if ids, err := s.RequeueExpiredLeases(ctx, "host-a"); err != nil || len(ids) != 1 {
		t.Fatalf("requeue: %v, %v", ids, err)
	}
	if a := active("host-a"); a == nil || *a != want {
		t.Fatalf("job requeued after its agent died: %+v, want %+v", a, want)
	}
	if claimed, err = s.ClaimJobs(ctx, "host-a", "owner-2", 1, time.Minute); err != nil || len(claimed) != 1 {
		t.Fatalf("claim after the requeue: %v, %v", claimed, err)
	}
	if _, err := s.FinishJob(ctx, claimed[0], "owner-2", db.Outcome{Status: job.StatusSucceeded}); err != nil {
		t.Fatal(err)
	}
	if a := active("host-a"); a != nil {
		t.Fatalf("finished job: %+v", a)
	}
}

// TestReportOrphanLooksAtDockerUnderTheLock: a container the reconciler
// listed may have been removed, and its record's removal committed, by the
// time the report is decided (the sweeper and remove jobs remove first and
// commit second). The records then say nobody owns it; the look at Docker,
// made under the game's lock, says it is gone, and nothing is reported.
func TestReportOrphanLooksAtDockerUnderTheLock(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	if _, err := s.UpdateRecord(ctx, "g1", createRunning("c1")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateRecord(ctx, "g1", func(cur *runtime.RuntimeRecord, at time.Time) (runtime.RuntimeRecord, outbox.TransitionDetails, error) {
		next, err := cur.Remove("c1", at)
		return next, outbox.TransitionDetails{Reason: outbox.ReasonCleanup}, err
	}); err != nil {
		t.Fatal(err)
	}
	orphan := outbox.OrphanPayload{HostID: "host-a", GameID: "g1", ContainerID: "c1", ContainerName: "n", At: at}

	var lockHeld bool
	gone := func(ctx context.Context) (bool, error) {
		// Another session cannot take the game's lock meanwhile.
		err := s.Pool().QueryRow(ctx, `SELECT NOT pg_try_advisory_lock(1920233, hashtext('g1'))`).Scan(&lockHeld)
		return false, err
	}
	wrote, check, err := s.ReportOrphan(ctx, orphan, gone)
	if err != nil || wrote || !check.Gone || check.Orphan() {
		t.Fatalf("container gone: wrote %v, check %+v, err %v", wrote, check, err)
	}
	if !lockHeld {
		t.Error("exists was asked without the game's lock held")
	}

	boom := errors.New("daemon unreachable")
	if wrote, _, err := s.ReportOrphan(ctx, orphan, func(context.Context) (bool, error) { return false, boom }); !errors.Is(err, boom) || wrote {
		t.Errorf("Docker failing: wrote %v, err %v; want the error and nothing written", wrote, err)
	}
	if wrote, check, err := s.ReportOrphan(ctx, orphan, func(context.Context) (bool, error) { return true, nil }); err != nil || !wrote || !check.Orphan() {
		t.Errorf("container still there: wrote %v, check %+v, err %v; want it reported", wrote, check, err)
	}
	if evs := readEvents(t, s, 3); evs[len(evs)-1].Type != outbox.TypeContainerOrphaned || len(evs) != 3 {
		t.Errorf("events %+v; want created, removed, one orphan report", evs)
	}
}

// TestListLiveRecords: the reconciler's view of a host is its running and
// stopped records, not its removed ones nor another host's.
func TestListLiveRecords(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	put := func(gameID, hostID string, status runtime.Status) {
		t.Helper()
		p := placement(gameID)
		p.HostID = hostID
		if _, err := s.UpdateRecord(ctx, gameID, func(_ *runtime.RuntimeRecord, at time.Time) (runtime.RuntimeRecord, outbox.TransitionDetails, error) {
			r, err := runtime.Create(p, "c-"+gameID, "engine:1", at)
			switch {
			case err != nil:
			case status == runtime.StatusStopped:
				r, err = r.Stop("c-"+gameID, at)
			case status == runtime.StatusRemoved:
				r, err = r.Remove("c-"+gameID, at)
			}
			return r, outbox.TransitionDetails{Reason: outbox.ReasonJobStart}, err
		}); err != nil {
			t.Fatal(err)
		}
	}
	put("g-running", "host-a", runtime.StatusRunning)
	put("g-stopped", "host-a", runtime.StatusStopped)
	put("g-removed", "host-a", runtime.StatusRemoved)
	put("g-elsewhere", "host-b", runtime.StatusRunning)

	recs, err := s.ListLiveRecords(ctx, "host-a")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range recs {
		got = append(got, r.GameID+":"+string(r.Status))
	}
	if want := []string{"g-running:running", "g-stopped:stopped"}; !slices.Equal(got, want) {
		t.Errorf("live records of host-a: %v, want %v", got, want)
	}
}

// TestFinishJobChecksAfterItsOutcome: a job's Check runs in the job's
// commit, after its record change and its outcome event, sees no job in
// progress (the job has just ended), and its change is a second event.
// Outcomes with a Check are not batched.
func TestFinishJobChecksAfterItsOutcome(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	if _, err := s.UpdateRecord(ctx, "g1", createRunning("c1")); err != nil {
		t.Fatal(err)
	}
	restart, _, err := s.InsertJob(ctx, db.NewJob{HostID: "host-a", GameID: "g1", Kind: job.KindRestart})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.InsertJob(ctx, db.NewJob{HostID: "host-a", GameID: "g1", Kind: job.KindStop}); err != nil {
		t.Fatal(err)
	}
	claimed, err := s.ClaimJobs(ctx, "host-a", "owner-1", 2, time.Minute)
	if err != nil || len(claimed) != 1 || claimed[0].ID != restart.ID {
		t.Fatalf("claim: %+v, %v; want the restart alone (the stop waits its turn)", claimed, err)
	}
	var checkSaw *outbox.ActiveJob
	checked := false
	o := db.Outcome{
		Status: job.StatusSucceeded,
		Record: func(cur *runtime.RuntimeRecord, at time.Time) (runtime.RuntimeRecord, outbox.TransitionDetails, error) {
			next, err := cur.Restart("c1", at, at)
			return next, outbox.TransitionDetails{Reason: outbox.ReasonJobRestart, JobID: restart.ID}, err
		},
		Check: func(cur *runtime.RuntimeRecord, active *outbox.ActiveJob, at time.Time) (runtime.RuntimeRecord, outbox.TransitionDetails, error) {
			checkSaw, checked = active, true
			code := 3
			next, err := cur.Stop("c1", at)
			return next, outbox.TransitionDetails{Reason: outbox.ReasonObservedDie, ExitCode: &code}, err
		},
	}
	if _, err := s.FinishJobs(ctx, "owner-1", []db.Finish{{Job: claimed[0], Outcome: o}}); err == nil {
		t.Fatal("an outcome with a check was batched")
	}
	ch, err := s.FinishJob(ctx, claimed[0], "owner-1", o)
	if err != nil {
		t.Fatal(err)
	}
	if !checked || checkSaw != nil || ch.Record.Status != runtime.StatusStopped {
		t.Fatalf("check ran %v, saw job %+v; change %+v", checked, checkSaw, ch)
	}
	var got []string
	for _, ev := range readEvents(t, s, 4)[1:] {
		got = append(got, string(ev.Type))
	}
	if want := []string{"runtime.running", "job.succeeded", "runtime.stopped"}; !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
}
