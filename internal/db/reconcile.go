package db

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/galaxy/rtmanager/internal/db/dbsqlc"
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
// change, it is dropped (busy, nothing written) if a job of the game on
// hostID is running by then. The check comes after decide has looked at
// Docker, under the game's lock, and that closes the race with jobs: a
// job is running from its claim, committed before it touches Docker,
// until its outcome commits, and its record write waits for the lock held
// here. So whatever a job did to the container that decide saw, either
// the job is seen running now or its record change is in the record
// decide was given.
func (s *Store) RepairRecord(ctx context.Context, hostID, gameID string, decide Decision) (change RecordChange, busy bool, err error) {
	err = s.inGameTx(ctx, gameID, func(q *dbsqlc.Queries) error {
		var err error
		change, err = s.applyDecision(ctx, q, gameID, func(cur *runtime.RuntimeRecord, at time.Time) (runtime.RuntimeRecord, outbox.TransitionDetails, error) {
			next, details, err := decide(cur, at)
			if err != nil || cur == nil || next.Equal(*cur) {
				return next, details, err
			}
			busy, err = q.GameHasRunningJob(ctx, dbsqlc.GameHasRunningJobParams{HostID: hostID, GameID: gameID})
			if err != nil {
				return runtime.RuntimeRecord{}, outbox.TransitionDetails{}, fmt.Errorf("check running jobs of game %s: %w", gameID, err)
			}
			if busy {
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
