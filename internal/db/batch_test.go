package db_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/db/dbsqlc"
	"github.com/galaxy/rtmanager/internal/domain/job"
	"github.com/galaxy/rtmanager/internal/domain/outbox"
	"github.com/galaxy/rtmanager/internal/testutil/wait"
)

// claimAll inserts one stop job per game and claims them all for owner.
func claimAll(t *testing.T, s *db.Store, owner string, games ...string) []db.Job {
	t.Helper()
	ctx := context.Background()
	for _, g := range games {
		if _, _, err := s.InsertJob(ctx, db.NewJob{HostID: "host-a", GameID: g, Kind: job.KindStop}); err != nil {
			t.Fatal(err)
		}
	}
	claimed, err := s.ClaimJobs(ctx, "host-a", owner, len(games), time.Minute)
	if err != nil || len(claimed) != len(games) {
		t.Fatalf("claimed %d of %d: %v", len(claimed), len(games), err)
	}
	return claimed
}

// insertStops inserts n stop jobs of one game on host-a, in id order.
func insertStops(t *testing.T, s *db.Store, game string, n int) []db.Job {
	t.Helper()
	jobs := make([]db.Job, n)
	for i := range jobs {
		j, _, err := s.InsertJob(context.Background(), db.NewJob{HostID: "host-a", GameID: game, Kind: job.KindStop})
		if err != nil {
			t.Fatal(err)
		}
		jobs[i] = j
	}
	return jobs
}

// jobEvents returns the outbox rows of job id (type, game, payload), in id
// order, whether or not they are readable through ReadOutbox yet.
func jobEvents(t *testing.T, s *db.Store, id int64) []db.StoredEvent {
	t.Helper()
	rows, err := s.Pool().Query(context.Background(),
		`SELECT id, type, host_id, game_id, payload FROM outbox WHERE job_id = $1 ORDER BY id`, id)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (db.StoredEvent, error) {
		var e db.StoredEvent
		var typ string
		err := r.Scan(&e.ID, &typ, &e.HostID, &e.GameID, &e.Payload)
		e.Type, e.JobID = outbox.Type(typ), id
		return e, err
	})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func TestFinishJobsWritesEachOutcomeWithOneEvent(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	claimed := claimAll(t, s, "agent-1", "g1", "g2", "g3")
	outcomes := []db.Outcome{
		{Status: job.StatusSucceeded},
		// Goes through a JSON array to the statement, so it has what JSON
		// escapes.
		{Status: job.StatusFailed, Error: "docker said \"no\"\n\tC:\\ <&> é 💥 \u0001"},
		{Status: job.StatusCancelled},
	}
	wantType := []outbox.Type{outbox.TypeJobSucceeded, outbox.TypeJobFailed, outbox.TypeJobCancelled}
	// Handed in against id order: the store sorts the batch, as the
	// statement looks each job up by binary search over the ids.
	batch := make([]db.Finish, len(claimed))
	for i, j := range claimed {
		batch[len(claimed)-1-i] = db.Finish{Job: j, Outcome: outcomes[i]}
	}
	done, err := s.FinishJobs(ctx, "agent-1", batch)
	if err != nil || len(done) != len(claimed) {
		t.Fatalf("finished %v, err %v", done, err)
	}
	for i, j := range claimed {
		got, err := s.GetJob(ctx, j.ID)
		if err != nil || got.Status != outcomes[i].Status || got.LastError != outcomes[i].Error ||
			got.FinishedAt == nil || got.LeaseOwner != "" || got.LeaseExpiresAt != nil {
			t.Fatalf("job %d after the batch: %+v %v", j.ID, got, err)
		}
		evs := jobEvents(t, s, j.ID)
		if len(evs) != 1 || evs[0].Type != wantType[i] || evs[0].GameID != j.GameID || evs[0].HostID != "host-a" || evs[0].ID != done[j.ID] {
			t.Fatalf("events of job %d: %+v (done %v)", j.ID, evs, done)
		}
		var p outbox.JobPayload
		if err := json.Unmarshal(evs[0].Payload, &p); err != nil {
			t.Fatal(err)
		}
		if p.JobID != j.ID || p.GameID != j.GameID || p.Status != outcomes[i].Status || p.Attempt != 1 || p.Error != outcomes[i].Error || p.Kind != "stop" {
			t.Fatalf("payload of job %d: %+v", j.ID, p)
		}
	}
	// The events are in one transaction, appended in job id order.
	evs := readEvents(t, s, 3)
	for i := range evs {
		if evs[i].Xid != evs[0].Xid || evs[i].JobID != claimed[i].ID {
			t.Fatalf("events %+v", evs)
		}
	}
	// Finishing again finds no lease: nothing changes, no event.
	if again, err := s.FinishJobs(ctx, "agent-1", batch); err != nil || len(again) != 0 {
		t.Fatalf("finished twice: %v %v", again, err)
	}
	if n := len(readEvents(t, s, 3)); n != 3 {
		t.Fatalf("%d events after a second finish, want 3", n)
	}
}

// TestFinishJobsGivesEachJobItsOwnValues finishes a batch longer than
// the stride at which a jsonb array keeps its elements' offsets (32), each
// job with an outcome of its own, and checks that every job and event got
// the values handed in for it.
func TestFinishJobsGivesEachJobItsOwnValues(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	games := make([]string, 100)
	for i := range games {
		games[i] = fmt.Sprintf("own-%03d", i)
	}
	claimed := claimAll(t, s, "agent-1", games...)
	statuses := []job.Status{job.StatusSucceeded, job.StatusFailed, job.StatusCancelled}
	batch := make([]db.Finish, len(claimed))
	for i, j := range claimed {
		o := db.Outcome{Status: statuses[i%3]}
		if o.Status == job.StatusFailed {
			o.Error = fmt.Sprintf("job %d of %s failed", j.ID, j.GameID)
		}
		batch[i] = db.Finish{Job: j, Outcome: o}
	}
	done, err := s.FinishJobs(ctx, "agent-1", batch)
	if err != nil || len(done) != len(claimed) {
		t.Fatalf("finished %d of %d: %v", len(done), len(claimed), err)
	}
	for i, j := range claimed {
		want := batch[i].Outcome
		got, err := s.GetJob(ctx, j.ID)
		if err != nil || got.Status != want.Status || got.LastError != want.Error {
			t.Fatalf("job %d: %s %q, want %s %q (%v)", j.ID, got.Status, got.LastError, want.Status, want.Error, err)
		}
		evs := jobEvents(t, s, j.ID)
		if len(evs) != 1 || evs[0].GameID != j.GameID || evs[0].ID != done[j.ID] {
			t.Fatalf("events of job %d: %+v", j.ID, evs)
		}
		var p outbox.JobPayload
		if err := json.Unmarshal(evs[0].Payload, &p); err != nil {
			t.Fatal(err)
		}
		if p.JobID != j.ID || p.GameID != j.GameID || p.Status != want.Status || p.Error != want.Error ||
			string(evs[0].Type) != "job."+string(want.Status) {
			t.Fatalf("event of job %d: %s %+v, want %s %q", j.ID, evs[0].Type, p, want.Status, want.Error)
		}
	}
}

// TestFinishJobsStatementRefusesIdsOutOfOrder calls the statement itself
// with ids against the ascending order the store keeps: the binary search
// then lands on other jobs' places, and the statement must finish nothing
// rather than give a job another's status or event. The three jobs are of
// one game and attempt (made running by hand, as no claim would), so only
// the statement's check of the id tells the places apart.
func TestFinishJobsStatementRefusesIdsOutOfOrder(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	claimed := insertStops(t, s, "g", 3)
	if _, err := s.Pool().Exec(ctx, `UPDATE jobs SET status = 'running', lease_owner = 'agent-1', attempt = 1,
		started_at = now(), lease_expires_at = now() + interval '1 hour' WHERE game_id = 'g'`); err != nil {
		t.Fatal(err)
	}
	p := dbsqlc.FinishJobsParams{LeaseOwner: "agent-1"}
	var games, statuses, lastErrors, eventTypes []string
	var payloads []json.RawMessage
	for i := len(claimed) - 1; i >= 0; i-- {
		j := claimed[i]
		p.Ids = append(p.Ids, j.ID)
		p.Attempts = append(p.Attempts, 1)
		games = append(games, j.GameID)
		statuses = append(statuses, string(job.StatusFailed))
		lastErrors = append(lastErrors, fmt.Sprintf("the error of job %d", j.ID))
		eventTypes = append(eventTypes, string(outbox.TypeJobFailed))
		payloads = append(payloads, json.RawMessage(fmt.Sprintf(`{"job_id": %d}`, j.ID)))
	}
	p.GameIds, p.Statuses, p.LastErrors, p.EventTypes, p.Payloads =
		mustJSON(t, games), mustJSON(t, statuses), mustJSON(t, lastErrors), mustJSON(t, eventTypes), mustJSON(t, payloads)
	rows, err := dbsqlc.New(s.Pool()).FinishJobs(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	// The middle id sits in its own place even reversed; the others must
	// not be finished with each other's values.
	for _, r := range rows {
		if r.JobID != claimed[1].ID {
			t.Fatalf("finished job %d from ids out of order: %+v", r.JobID, rows)
		}
	}
	for _, j := range claimed {
		got, err := s.GetJob(ctx, j.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status == job.StatusFailed && got.LastError != fmt.Sprintf("the error of job %d", j.ID) {
			t.Fatalf("job %d finished with another job's error %q", j.ID, got.LastError)
		}
		if j.ID != claimed[1].ID && got.Status != job.StatusRunning {
			t.Fatalf("job %d is %s after ids out of order, want running", j.ID, got.Status)
		}
	}
}

func TestFinishJobsSkipsJobsWhoseLeaseWasLost(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	claimed := claimAll(t, s, "agent-1", "held", "taken", "reclaimed", "finished")
	held, taken, reclaimed, finished := claimed[0], claimed[1], claimed[2], claimed[3]

	// taken: its lease expired and another agent claimed it.
	// reclaimed: its lease expired and this same owner claimed it again,
	// so the batch's copy is of an earlier attempt.
	if _, err := s.Pool().Exec(ctx, `UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE id = ANY($1)`,
		[]int64{taken.ID, reclaimed.ID}); err != nil {
		t.Fatal(err)
	}
	if ids, err := s.RequeueExpiredLeases(ctx, "host-a"); err != nil || len(ids) != 2 {
		t.Fatalf("requeue: %v %v", ids, err)
	}
	if got, err := s.ClaimJobs(ctx, "host-a", "agent-2", 1, time.Minute); err != nil || len(got) != 1 || got[0].ID != taken.ID {
		t.Fatalf("agent-2 claim: %v %v", got, err)
	}
	again, err := s.ClaimJobs(ctx, "host-a", "agent-1", 1, time.Minute)
	if err != nil || len(again) != 1 || again[0].ID != reclaimed.ID || again[0].Attempt != 2 {
		t.Fatalf("agent-1 reclaim: %+v %v", again, err)
	}
	// finished: already finished on its own.
	if _, err := s.FinishJob(ctx, finished, "agent-1", db.Outcome{Status: job.StatusSucceeded}); err != nil {
		t.Fatal(err)
	}

	var batch []db.Finish
	for _, j := range claimed {
		batch = append(batch, db.Finish{Job: j, Outcome: db.Outcome{Status: job.StatusFailed, Error: "batch"}})
	}
	done, err := s.FinishJobs(ctx, "agent-1", batch)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := done[held.ID]; !ok || len(done) != 1 {
		t.Fatalf("finished %v, want only job %d", done, held.ID)
	}
	for _, c := range []struct {
		j      db.Job
		status job.Status
		owner  string
		events int
	}{
		{held, job.StatusFailed, "", 1},
		{taken, job.StatusRunning, "agent-2", 0},
		{reclaimed, job.StatusRunning, "agent-1", 0},
		{finished, job.StatusSucceeded, "", 1},
	} {
		got, err := s.GetJob(ctx, c.j.ID)
		if err != nil || got.Status != c.status || got.LeaseOwner != c.owner {
			t.Errorf("job %s: %s owned by %q, want %s by %q (%v)", c.j.GameID, got.Status, got.LeaseOwner, c.status, c.owner, err)
		}
		if evs := jobEvents(t, s, c.j.ID); len(evs) != c.events {
			t.Errorf("job %s: %d outcome events, want %d", c.j.GameID, len(evs), c.events)
		}
	}
	// The current attempt of the reclaimed job is still finishable.
	if done, err := s.FinishJobs(ctx, "agent-1", []db.Finish{{Job: again[0], Outcome: db.Outcome{Status: job.StatusSucceeded}}}); err != nil || len(done) != 1 {
		t.Fatalf("finish the current attempt: %v %v", done, err)
	}
}

func TestFinishJobsTwoJobsOfOneGame(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	jobs := insertStops(t, s, "g1", 2)
	// Per-game FIFO never lets an agent hold both; force it, to see that
	// the batch locks the game once and keeps the jobs' order.
	if _, err := s.Pool().Exec(ctx, `UPDATE jobs SET status = 'running', attempt = 1, lease_owner = 'agent-1',
		lease_expires_at = now() + interval '1 minute', started_at = now() WHERE game_id = 'g1'`); err != nil {
		t.Fatal(err)
	}
	batch := []db.Finish{
		{Job: withAttempt(jobs[1], 1), Outcome: db.Outcome{Status: job.StatusSucceeded}},
		{Job: withAttempt(jobs[0], 1), Outcome: db.Outcome{Status: job.StatusSucceeded}},
	}
	done, err := s.FinishJobs(ctx, "agent-1", batch)
	if err != nil || len(done) != 2 {
		t.Fatalf("finished %v: %v", done, err)
	}
	evs := readEvents(t, s, 2)
	if len(evs) != 2 || evs[0].JobID != jobs[0].ID || evs[1].JobID != jobs[1].ID {
		t.Fatalf("events not in job order: %+v", evs)
	}

	// The same job twice is refused, and nothing is written.
	more := claimAll(t, s, "agent-1", "g2")
	twice := []db.Finish{{Job: more[0], Outcome: db.Outcome{Status: job.StatusSucceeded}}, {Job: more[0], Outcome: db.Outcome{Status: job.StatusFailed}}}
	if _, err := s.FinishJobs(ctx, "agent-1", twice); err == nil {
		t.Fatal("a batch holding a job twice was accepted")
	}
	if got, _ := s.GetJob(ctx, more[0].ID); got.Status != job.StatusRunning || len(jobEvents(t, s, more[0].ID)) != 0 {
		t.Fatalf("refused batch wrote: %+v", got)
	}
}

func withAttempt(j db.Job, attempt int) db.Job {
	j.Attempt = attempt
	return j
}

func TestFinishJobsRefusesWhatItCannotBatch(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	claimed := claimAll(t, s, "agent-1", "g1", "g2")
	for _, bad := range [][]db.Finish{
		{{Job: claimed[0], Outcome: db.Outcome{Status: job.StatusSucceeded}}, {Job: claimed[1], Outcome: db.Outcome{Status: job.StatusRunning}}},
		{{Job: claimed[0], Outcome: db.Outcome{Status: job.StatusSucceeded}}, {Job: claimed[1], Outcome: db.Outcome{Status: job.StatusSucceeded, Record: createRunning("c1")}}},
	} {
		if _, err := s.FinishJobs(ctx, "agent-1", bad); err == nil {
			t.Fatalf("batch %+v accepted", bad)
		}
	}
	for _, j := range claimed {
		if got, _ := s.GetJob(ctx, j.ID); got.Status != job.StatusRunning || len(jobEvents(t, s, j.ID)) != 0 {
			t.Fatalf("refused batch wrote job %d: %+v", j.ID, got)
		}
	}
	if done, err := s.FinishJobs(ctx, "agent-1", nil); err != nil || len(done) != 0 {
		t.Fatalf("empty batch: %v %v", done, err)
	}
}

// TestFinishJobsLocksEveryGameBeforeWriting holds one game's lock while a
// batch of three games runs: the batch waits for it without having
// written anything (the transaction has no xid yet), so its events sort
// after those of the lock holder, as per-game commit order needs.
func TestFinishJobsLocksEveryGameBeforeWriting(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	claimed := claimAll(t, s, "agent-1", "g1", "g2", "g3")

	holder, err := s.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = holder.Rollback(ctx) }()
	if _, err := holder.Exec(ctx, `SELECT pg_advisory_xact_lock(1920233, hashtext('g2'))`); err != nil {
		t.Fatal(err)
	}
	var batch []db.Finish
	for _, j := range claimed {
		batch = append(batch, db.Finish{Job: j, Outcome: db.Outcome{Status: job.StatusSucceeded}})
	}
	type result struct {
		done map[int64]int64
		err  error
	}
	res := make(chan result, 1)
	go func() {
		done, err := s.FinishJobs(ctx, "agent-1", batch)
		res <- result{done, err}
	}()

	// The batch's backend waits on an advisory lock, with no xid.
	var waiting struct {
		pid    int32
		hasXid bool
	}
	wait.For(t, 30*time.Second, "the batch to wait for g2's lock", func() bool {
		err := s.Pool().QueryRow(ctx, `
			SELECT a.pid, a.backend_xid IS NOT NULL
			FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid
			WHERE a.datname = current_database() AND l.locktype = 'advisory' AND NOT l.granted
			  AND l.classid = 1920233 AND l.objid = hashtext('g2')::oid`).Scan(&waiting.pid, &waiting.hasXid)
		if err == pgx.ErrNoRows {
			return false
		}
		if err != nil {
			t.Fatal(err)
		}
		return true
	})
	if waiting.hasXid {
		t.Fatal("the batch wrote (has a transaction id) before it held every game's lock")
	}
	// Meanwhile the lock holder writes an event of g2 and commits first.
	if _, err := holder.Exec(ctx, `INSERT INTO outbox (type, host_id, game_id, payload) VALUES ('test.marker', 'host-a', 'g2', '{}')`); err != nil {
		t.Fatal(err)
	}
	if err := holder.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	r := <-res
	if r.err != nil || len(r.done) != 3 {
		t.Fatalf("batch: %v %v", r.done, r.err)
	}
	evs := readEvents(t, s, 4)
	if evs[0].Type != "test.marker" {
		t.Fatalf("the batch's events sort before the lock holder's: %+v", evs)
	}
}

// TestFinishJobsConcurrentBatchesDoNotDeadlock finishes overlapping sets
// of games from many goroutines at once, each batch in a random order:
// the locks are taken in one global order, so none deadlocks, and every
// job ends with exactly one event.
func TestFinishJobsConcurrentBatchesDoNotDeadlock(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	const games, perGame, batches = 40, 10, 40
	if _, err := s.Pool().Exec(ctx, `INSERT INTO jobs (host_id, game_id, kind, status, attempt, lease_owner, lease_expires_at, started_at)
		SELECT 'host-a', 'g' || (i % $1), 'stop', 'running', 1, 'agent-1', now() + interval '1 hour', now()
		FROM generate_series(1, $2) i`, games, games*perGame); err != nil {
		t.Fatal(err)
	}
	rows, err := s.Pool().Query(ctx, `SELECT id, host_id, game_id, kind, attempt FROM jobs`)
	if err != nil {
		t.Fatal(err)
	}
	all, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (db.Job, error) {
		var j db.Job
		err := r.Scan(&j.ID, &j.HostID, &j.GameID, &j.Kind, &j.Attempt)
		return j, err
	})
	if err != nil {
		t.Fatal(err)
	}
	rand.Shuffle(len(all), func(i, k int) { all[i], all[k] = all[k], all[i] })
	var wg sync.WaitGroup
	errs := make(chan error, batches)
	per := len(all) / batches
	for b := range batches {
		part := all[b*per : (b+1)*per]
		wg.Go(func() {
			fs := make([]db.Finish, len(part))
			for i, j := range part {
				fs[i] = db.Finish{Job: j, Outcome: db.Outcome{Status: job.StatusSucceeded}}
			}
			done, err := s.FinishJobs(ctx, "agent-1", fs)
			if err == nil && len(done) != len(part) {
				err = fmt.Errorf("finished %d of %d", len(done), len(part))
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	var jobs, events, distinct int
	if err := s.Pool().QueryRow(ctx, `SELECT (SELECT count(*) FROM jobs WHERE status = 'succeeded'),
		(SELECT count(*) FROM outbox), (SELECT count(DISTINCT job_id) FROM outbox)`).Scan(&jobs, &events, &distinct); err != nil {
		t.Fatal(err)
	}
	if jobs != len(all) || events != len(all) || distinct != len(all) {
		t.Fatalf("%d jobs succeeded, %d events for %d jobs; want %d of each", jobs, events, distinct, len(all))
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
