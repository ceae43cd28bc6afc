package db

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/galaxy/rtmanager/internal/db/dbsqlc"
	"github.com/galaxy/rtmanager/internal/domain/job"
	"github.com/galaxy/rtmanager/internal/domain/outbox"
)

// ErrJobFinished reports a cancel of a job that has already ended.
var ErrJobFinished = errors.New("job already finished")

// ReleaseJob gives a job owner still holds back to the queue, due at once
// and without counting the attempt. A draining agent uses it for jobs it
// could not finish before its deadline: the next agent (or the same one
// after its restart) runs them again, which is safe because every
// operation is idempotent. ErrLeaseLost when owner no longer holds it.
func (s *Store) ReleaseJob(ctx context.Context, j Job, owner string) (Job, error) {
	row, err := s.q.ReleaseJob(ctx, dbsqlc.ReleaseJobParams{ID: j.ID, LeaseOwner: owner})
	if errors.Is(err, pgx.ErrNoRows) {
		return Job{}, fmt.Errorf("release job %d: %w", j.ID, ErrLeaseLost)
	}
	if err != nil {
		return Job{}, fmt.Errorf("release job %d: %w", j.ID, err)
	}
	return jobFromRow(row), nil
}

// CancelJob withdraws a job. A queued job is cancelled at once, with its
// outcome event in the same transaction; a running job is only marked
// (cancel_requested_at), and the agent holding it interrupts it when it
// next renews its lease and records the outcome itself. The returned job is
// the row after the change. ErrJobNotFound for an unknown id,
// ErrJobFinished for a job that has already ended.
//
// The job row is what decides, not the caller's earlier read: the cancel
// of a queued job and its claim race on the row lock, and whichever
// commits first wins; the loser sees the other's result.
//
// The agent cancels the queued jobs whose cancel the Game Master asked
// for (cancel_requested_at) through this same path, so a cancel reads the
// same whoever carries it out.
func (s *Store) CancelJob(ctx context.Context, id int64) (Job, error) {
	var out Job
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		q := s.q.WithTx(tx)
		cur, err := q.GetJob(ctx, id)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("cancel job %d: %w", id, ErrJobNotFound)
		}
		if err != nil {
			return fmt.Errorf("cancel job %d: read: %w", id, err)
		}
		// The game lock comes before any write so that the outcome event
		// sorts in commit order with the game's other events.
		if err := q.LockGame(ctx, cur.GameID); err != nil {
			return fmt.Errorf("cancel job %d: lock game %s: %w", id, cur.GameID, err)
		}
		row, err := q.CancelQueuedJob(ctx, id)
		if err == nil {
			ev, err := outbox.ForJobOutcome(row.ID, row.GameID, row.HostID, row.Kind, job.StatusCancelled, int(row.Attempt), "")
			if err != nil {
				return fmt.Errorf("cancel job %d: build outcome event: %w", id, err)
			}
			if _, err := insertEvent(ctx, q, ev); err != nil {
				return err
			}
			out = jobFromRow(row)
			return nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("cancel job %d: %w", id, err)
		}
		row, err = q.RequestJobCancel(ctx, id)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("cancel job %d: %w", id, ErrJobFinished)
		}
		if err != nil {
			return fmt.Errorf("cancel job %d: request: %w", id, err)
		}
		out = jobFromRow(row)
		return nil
	})
	if err != nil {
		return Job{}, err
	}
	return out, nil
}
