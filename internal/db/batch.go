package db

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/galaxy/rtmanager/internal/db/dbsqlc"
	"github.com/galaxy/rtmanager/internal/domain/outbox"
)

// Finish is one job of a FinishJobs batch: the job as its owner claimed it
// (ID, GameID, HostID, Kind and Attempt are used) and how it ended. An
// Outcome with a Record or Check decision cannot be batched: use FinishJob.
type Finish struct {
	Job     Job
	Outcome Outcome
}

// FinishJobs ends a batch of jobs that owner holds, with one outcome event
// per job, in one transaction (one statement, one round trip). Every game of
// the batch is locked, in a fixed order, before anything is written, so the
// events keep the per-game commit order FinishJob keeps.
//
// A job is finished only when it is still running under owner in the
// attempt it was claimed for; the others (their lease was lost) are left as
// they are and get no event. FinishJobs returns the set of job ids it
// finished, each with the id of its outcome event: an id of the batch
// missing from it lost its lease. An error means nothing was written.
//
// The batch must not hold the same job twice. Two jobs of one game are
// allowed (the game is locked once and the events are appended in job id
// order), though per-game FIFO means only one of them can still be held.
func (s *Store) FinishJobs(ctx context.Context, owner string, batch []Finish) (map[int64]int64, error) {
	if len(batch) == 0 {
		return map[int64]int64{}, nil
	}
	p := dbsqlc.FinishJobsParams{
		LeaseOwner: owner,
		Ids:        make([]int64, len(batch)),
		Attempts:   make([]int32, len(batch)),
	}
	// The statement reads the text values by place from JSON arrays (see
	// queries/worker_batch.sql).
	n := len(batch)
	games, statuses, lastErrors, eventTypes := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	payloads := make([][]byte, n)
	// The statement finds each job's place in the arrays by binary search
	// over the ids, so they go in ascending order.
	batch = slices.SortedFunc(slices.Values(batch), func(a, b Finish) int { return cmp.Compare(a.Job.ID, b.Job.ID) })
	for i, f := range batch {
		j, o := f.Job, f.Outcome
		if i > 0 && batch[i-1].Job.ID == j.ID {
			return nil, fmt.Errorf("finish jobs: job %d is twice in the batch", j.ID)
		}
		if !o.Status.IsFinal() {
			return nil, fmt.Errorf("finish job %d: status %q is not final", j.ID, o.Status)
		}
		if o.Record != nil || o.Check != nil {
			return nil, fmt.Errorf("finish job %d: a record transition cannot be batched; use FinishJob", j.ID)
		}
		ev, err := outbox.ForJobOutcomeImage(j.ID, j.GameID, j.HostID, j.Kind, o.Status, j.Attempt, o.Error, o.ImageDigest)
		if err != nil {
			return nil, fmt.Errorf("build outcome event of job %d: %w", j.ID, err)
		}
		p.Ids[i] = j.ID
		p.Attempts[i] = int32(j.Attempt)
		games[i] = j.GameID
		statuses[i] = string(o.Status)
		lastErrors[i] = o.Error
		eventTypes[i] = string(ev.Type)
		payloads[i] = ev.Payload
	}
	var err error
	for _, a := range []struct {
		to   *[]byte
		from []string
	}{{&p.GameIds, games}, {&p.Statuses, statuses}, {&p.LastErrors, lastErrors}, {&p.EventTypes, eventTypes}} {
		if *a.to, err = json.Marshal(a.from); err != nil {
			return nil, fmt.Errorf("finish jobs: encode the batch: %w", err)
		}
	}
	p.Payloads = jsonArray(payloads)
	rows, err := s.q.FinishJobs(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("finish %d jobs of %s: %w", len(batch), owner, err)
	}
	done := make(map[int64]int64, len(rows))
	for _, r := range rows {
		done[r.JobID] = r.ID
	}
	return done, nil
}

// jsonArray joins JSON values (each valid, as json.Marshal makes them) into
// one JSON array.
func jsonArray(values [][]byte) []byte {
	n := 2
	for _, v := range values {
		n += len(v) + 1
	}
	out := make([]byte, 0, n)
	out = append(out, '[')
	for i, v := range values {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, v...)
	}
	return append(out, ']')
}
