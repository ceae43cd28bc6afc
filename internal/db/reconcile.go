package db

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/galaxy/rtmanager/internal/db/dbsqlc"
	"github.com/galaxy/rtmanager/internal/domain/outbox"
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
}

// Orphan reports whether the container is an orphan that may be acted on.
func (c OrphanCheck) Orphan() bool { return !c.Owned && !c.JobActive }

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
// game), the container turns out to be owned or in a job's hands, or an
// event for it is already in the outbox. It returns whether it wrote the
// event, and the check it made.
func (s *Store) ReportOrphan(ctx context.Context, o outbox.OrphanPayload) (bool, OrphanCheck, error) {
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

// GameHasRunningJob reports whether a job of the game on the host is
// running: the reconciler leaves such a game to the job, which records what
// it does, instead of racing it with a repair.
func (s *Store) GameHasRunningJob(ctx context.Context, hostID, gameID string) (bool, error) {
	running, err := s.q.GameHasRunningJob(ctx, dbsqlc.GameHasRunningJobParams{HostID: hostID, GameID: gameID})
	if err != nil {
		return false, fmt.Errorf("check running jobs of game %s: %w", gameID, err)
	}
	return running, nil
}
