package db

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/galaxy/rtmanager/internal/db/dbsqlc"
	"github.com/galaxy/rtmanager/internal/domain/job"
	"github.com/galaxy/rtmanager/internal/domain/outbox"
	"github.com/galaxy/rtmanager/internal/domain/runtime"
)

// OrphanCheck says whether a labelled container may be treated as an
// orphan of its host.
type OrphanCheck struct {
	// Owned: a running or stopped record of the host is bound to the
	// container, so it is no orphan.
	Owned bool
	// JobActive: a queued or running job of the container's game exists on
	// the host; it may be creating, adopting or replacing the container, so
	// it must be left alone for now.
	JobActive bool
	// Gone: the container no longer exists (ReportOrphan only).
	Gone bool
}

// Orphan reports whether the container is an orphan that may be acted on.
func (c OrphanCheck) Orphan() bool { return !c.Owned && !c.JobActive && !c.Gone }

// CheckOrphan tells whether containerID (of game gameID, "" when the
// container carries no game label) is owned by a live record of hostID or
// may be in the hands of a job.
func (s *Store) CheckOrphan(ctx context.Context, hostID, gameID, containerID string) (OrphanCheck, error) {
	return checkOrphan(ctx, s.q, hostID, gameID, containerID)
}

func checkOrphan(ctx context.Context, q *dbsqlc.Queries, hostID, gameID, containerID string) (OrphanCheck, error) {
	var c OrphanCheck
	var err error
	c.Owned, err = q.RecordOwnsContainer(ctx, dbsqlc.RecordOwnsContainerParams{HostID: hostID, ContainerID: &containerID})
	if err != nil {
		return OrphanCheck{}, fmt.Errorf("check owner of container %s: %w", containerID, err)
	}
	if gameID != "" {
		c.JobActive, err = q.GameHasUnfinishedJob(ctx, dbsqlc.GameHasUnfinishedJobParams{HostID: hostID, GameID: gameID})
		if err != nil {
			return OrphanCheck{}, fmt.Errorf("check jobs of game %s: %w", gameID, err)
		}
	}
	return c, nil
}

// ReportOrphan appends a container.orphaned event for o unless, checked in
// the same transaction under the game's lock (the container's when it has no
// game), the container turns out to be gone, owned or in a job's hands, or
// an event for it is already in the outbox. It returns whether it wrote the
// event, and the check it made.
//
// exists is asked first, under the lock, and the records second. A listing
// of containers is older than this transaction, and a writer that removes a
// container (the sweeper, a remove job) does so before it commits the
// record's removal: checked against the listing alone, a container removed
// and committed meanwhile would look owned by nobody. Under the lock no
// record commit can come between the two looks, and a job that finishes
// needs the lock too, so what exists says still holds when the records are
// read. A nil exists skips that look.
func (s *Store) ReportOrphan(ctx context.Context, o outbox.OrphanPayload, exists func(context.Context) (bool, error)) (bool, OrphanCheck, error) {
	ev, err := outbox.ForContainerOrphaned(o)
	if err != nil {
		return false, OrphanCheck{}, err
	}
	var (
		wrote bool
		check OrphanCheck
	)
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		q := s.q.WithTx(tx)
		if o.GameID != "" {
			if err := q.LockGame(ctx, o.GameID); err != nil {
				return fmt.Errorf("lock game %s: %w", o.GameID, err)
			}
		} else if err := q.LockContainer(ctx, o.ContainerID); err != nil {
			return fmt.Errorf("lock container %s: %w", o.ContainerID, err)
		}
		if exists != nil {
			ok, err := exists(ctx)
			if err != nil {
				return fmt.Errorf("look for container %s: %w", o.ContainerID, err)
			}
			if !ok {
				check.Gone = true
				return nil
			}
		}
		var err error
		if check, err = checkOrphan(ctx, q, o.HostID, o.GameID, o.ContainerID); err != nil {
			return err
		}
		if !check.Orphan() {
			return nil
		}
		reported, err := q.OrphanReported(ctx, dbsqlc.OrphanReportedParams{HostID: o.HostID, GameID: o.GameID, ContainerID: o.ContainerID})
		if err != nil {
			return fmt.Errorf("check earlier report of container %s: %w", o.ContainerID, err)
		}
		if reported {
			return nil
		}
		if _, err := insertEvent(ctx, q, ev); err != nil {
			return err
		}
		wrote = true
		return nil
	})
	if err != nil {
		return false, OrphanCheck{}, fmt.Errorf("report orphaned container %s: %w", o.ContainerID, err)
	}
	return wrote, check, nil
}

// RepairRecord is UpdateRecord for the reconciler: when decide wants a
// change, it is dropped (busy, nothing written) if the game has a job in
// progress on hostID by then (see ActiveJob). The check comes after decide
// has looked at Docker, under the game's lock, and that closes the race
// with jobs: a job is in progress from its claim, committed before it
// touches Docker, until its outcome commits, and its record write waits
// for the lock held here. So whatever a job did to the container that
// decide saw, either the job is seen in progress now or its record change
// is in the record decide was given. A job queued again after an attempt
// (or after its agent died) is still in progress: its next attempt
// records the change under the job's reason.
func (s *Store) RepairRecord(ctx context.Context, hostID, gameID string, decide Decision) (change RecordChange, busy bool, err error) {
	err = s.inGameTx(ctx, gameID, func(q *dbsqlc.Queries) error {
		var err error
		change, err = s.applyDecision(ctx, q, gameID, func(cur *runtime.RuntimeRecord, at time.Time) (runtime.RuntimeRecord, outbox.TransitionDetails, error) {
			next, details, err := decide(cur, at)
			if err != nil || cur == nil || next.Equal(*cur) {
				return next, details, err
			}
			active, err := activeJob(ctx, q, hostID, gameID)
			if err != nil {
				return runtime.RuntimeRecord{}, outbox.TransitionDetails{}, err
			}
			if active != nil {
				busy = true
				return *cur, outbox.TransitionDetails{}, nil
			}
			return next, details, nil
		})
		return err
	})
	if err != nil {
		return RecordChange{}, false, err
	}
	return change, busy, nil
}

// ObservedDecision is a Decision that also gets the game's job in progress
// (nil when none), read under the game's lock: the job that may have asked
// for what the caller observed (see outbox.Attribute).
type ObservedDecision func(cur *runtime.RuntimeRecord, active *outbox.ActiveJob, at time.Time) (runtime.RuntimeRecord, outbox.TransitionDetails, error)

// ObserveRecord is UpdateRecord for writers that record what they observed
// of a container rather than what they did to it: the events watcher, and a
// job's look at its container after its commit. The game's job in progress
// on hostID is read in the same transaction, after the game's lock and the
// record, so the attribution cannot race the job's own commit: either the
// job is in progress here, or its change is already in the record.
func (s *Store) ObserveRecord(ctx context.Context, hostID, gameID string, decide ObservedDecision) (RecordChange, error) {
	var change RecordChange
	err := s.inGameTx(ctx, gameID, func(q *dbsqlc.Queries) error {
		var err error
		change, err = s.applyDecision(ctx, q, gameID, func(cur *runtime.RuntimeRecord, at time.Time) (runtime.RuntimeRecord, outbox.TransitionDetails, error) {
			var active *outbox.ActiveJob
			if cur != nil && !cur.Status.IsTerminal() {
				var err error
				if active, err = activeJob(ctx, q, hostID, gameID); err != nil {
					return runtime.RuntimeRecord{}, outbox.TransitionDetails{}, err
				}
			}
			return decide(cur, active, at)
		})
		return err
	})
	if err != nil {
		return RecordChange{}, err
	}
	return change, nil
}

// ActiveJob returns the game's job in progress on hostID, nil when none.
// Outside a writer's transaction the answer may be stale at once; it is
// for tests and operators.
func (s *Store) ActiveJob(ctx context.Context, hostID, gameID string) (*outbox.ActiveJob, error) {
	return activeJob(ctx, s.q, hostID, gameID)
}

func activeJob(ctx context.Context, q *dbsqlc.Queries, hostID, gameID string) (*outbox.ActiveJob, error) {
	row, err := q.GameJobInProgress(ctx, dbsqlc.GameJobInProgressParams{HostID: hostID, GameID: gameID})
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("read the job in progress of game %s: %w", gameID, err)
	}
	return &outbox.ActiveJob{ID: row.ID, Kind: job.Kind(row.Kind)}, nil
}
