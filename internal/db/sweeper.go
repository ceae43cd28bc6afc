package db

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/galaxy/rtmanager/internal/db/dbsqlc"
	"github.com/galaxy/rtmanager/internal/domain/outbox"
	"github.com/galaxy/rtmanager/internal/domain/runtime"
)

// This file holds the store's side of the cleanup sweeper and of retention:
// the sweep locks, the selection of expired stopped records, the cleanup
// transition, the pruning of old jobs and outbox rows, and the registry of
// outbox consumers that pruning respects.

var (
	// ErrRecordMoved reports that a record selected for cleanup changed
	// before its removal was committed (it was started again, re-created or
	// touched by another operation). Cleanup then writes nothing.
	ErrRecordMoved = errors.New("record changed since it was selected for cleanup")
	// ErrConsumerNotFound reports that no outbox consumer has the name.
	ErrConsumerNotFound = errors.New("outbox consumer not found")
)

// Now returns the time of the store's clock at the database's precision:
// the clock that dates records (last_op_at and the other record times).
func (s *Store) Now() time.Time { return s.now() }

// SessionLock is a session-level advisory lock held on a connection taken
// from the pool for as long as the lock is held.
type SessionLock struct {
	conn   *pgxpool.Conn
	unlock func(ctx context.Context, q *dbsqlc.Queries) (bool, error)
}

// Release unlocks and gives the connection back to the pool. When the
// unlock cannot be confirmed the connection is closed instead, which ends
// the session and with it the lock. Release may be called more than once.
func (l *SessionLock) Release() {
	if l == nil || l.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ok, err := l.unlock(ctx, dbsqlc.New(l.conn))
	if err != nil || !ok {
		_ = l.conn.Conn().Close(ctx)
	}
	l.conn.Release()
	l.conn = nil
}

// tryLock takes a session lock with try; held false (and a nil lock) when
// another session holds it.
func (s *Store) tryLock(ctx context.Context, what string,
	try func(context.Context, *dbsqlc.Queries) (bool, error),
	unlock func(context.Context, *dbsqlc.Queries) (bool, error),
) (*SessionLock, bool, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("take the %s lock: acquire a connection: %w", what, err)
	}
	held, err := try(ctx, dbsqlc.New(conn))
	if err != nil {
		// The lock may have been granted before the error: closing the
		// session drops it either way.
		_ = conn.Conn().Close(context.Background())
		conn.Release()
		return nil, false, fmt.Errorf("take the %s lock: %w", what, err)
	}
	if !held {
		conn.Release()
		return nil, false, nil
	}
	return &SessionLock{conn: conn, unlock: unlock}, true, nil
}

// TryLockHostSweep takes the lock that lets one agent at a time sweep the
// records of hostID. held is false when another session has it.
func (s *Store) TryLockHostSweep(ctx context.Context, hostID string) (lock *SessionLock, held bool, err error) {
	return s.tryLock(ctx, "sweep lock of host "+hostID,
		func(ctx context.Context, q *dbsqlc.Queries) (bool, error) { return q.TryLockHostSweep(ctx, hostID) },
		func(ctx context.Context, q *dbsqlc.Queries) (bool, error) { return q.UnlockHostSweep(ctx, hostID) })
}

// TryLockRetention takes the lock that lets one agent at a time prune jobs
// and outbox rows. held is false when another session has it.
func (s *Store) TryLockRetention(ctx context.Context) (lock *SessionLock, held bool, err error) {
	return s.tryLock(ctx, "retention",
		func(ctx context.Context, q *dbsqlc.Queries) (bool, error) { return q.TryLockRetention(ctx) },
		func(ctx context.Context, q *dbsqlc.Queries) (bool, error) { return q.UnlockRetention(ctx) })
}

// SweepKey is a place in the (last_op_at, game_id) order of expired
// records; the zero key is the beginning.
type SweepKey struct {
	LastOpAt time.Time
	GameID   string
}

// KeyOf returns the key of a record.
func KeyOf(r runtime.RuntimeRecord) SweepKey { return SweepKey{LastOpAt: r.LastOpAt, GameID: r.GameID} }

// ListExpiredStopped returns up to limit stopped records of hostID whose
// LastOpAt is before cutoff and whose game has no queued or running job,
// after the key in (LastOpAt, GameID) order.
func (s *Store) ListExpiredStopped(ctx context.Context, hostID string, cutoff time.Time, after SweepKey, limit int) ([]runtime.RuntimeRecord, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("list expired stopped records of host %s: limit must be positive, got %d", hostID, limit)
	}
	rows, err := s.q.ListExpiredStoppedRecords(ctx, dbsqlc.ListExpiredStoppedRecordsParams{
		HostID: hostID, Cutoff: cutoff, AfterLastOpAt: after.LastOpAt, AfterGameID: after.GameID, MaxRecords: int32(limit),
	})
	if err != nil {
		return nil, fmt.Errorf("list expired stopped records of host %s: %w", hostID, err)
	}
	return recordsFromRows(rows), nil
}

// StillExpired re-reads a record selected for cleanup and reports whether
// it may still go: unchanged since it was selected (same status, container
// and LastOpAt), LastOpAt before cutoff, and no queued or running job of
// its game. The sweeper asks just before removing the container.
func (s *Store) StillExpired(ctx context.Context, selected runtime.RuntimeRecord, cutoff time.Time) (bool, error) {
	cur, err := s.GetRecord(ctx, selected.GameID)
	if errors.Is(err, runtime.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !unchangedStopped(cur, selected) || !cur.LastOpAt.Before(cutoff) {
		return false, nil
	}
	active, err := s.q.GameHasActiveJob(ctx, selected.GameID)
	if err != nil {
		return false, fmt.Errorf("look for active jobs of game %s: %w", selected.GameID, err)
	}
	return !active, nil
}

func unchangedStopped(cur, selected runtime.RuntimeRecord) bool {
	return cur.Status == runtime.StatusStopped &&
		cur.CurrentContainerID == selected.CurrentContainerID &&
		cur.LastOpAt.Equal(selected.LastOpAt)
}

// CommitCleanup records that the sweeper removed the container of the
// selected record: the record becomes removed with reason cleanup, with its
// outbox event, in one transaction. A record already removed (say, by the
// events watcher seeing the destroy first) is left as it is and reported
// unchanged. A record that changed otherwise since it was selected is left
// as it is with ErrRecordMoved.
func (s *Store) CommitCleanup(ctx context.Context, selected runtime.RuntimeRecord) (RecordChange, error) {
	return s.UpdateRecord(ctx, selected.GameID, func(cur *runtime.RuntimeRecord, at time.Time) (runtime.RuntimeRecord, outbox.TransitionDetails, error) {
		none := outbox.TransitionDetails{}
		switch {
		case cur == nil:
			return runtime.RuntimeRecord{}, none, fmt.Errorf("cleanup of game %s: %w", selected.GameID, runtime.ErrNotFound)
		case cur.Status == runtime.StatusRemoved:
			return *cur, none, nil
		case !unchangedStopped(*cur, selected):
			return runtime.RuntimeRecord{}, none, fmt.Errorf("cleanup of game %s: now %s in container %q since %s: %w",
				selected.GameID, cur.Status, cur.CurrentContainerID, cur.LastOpAt.Format(time.RFC3339Nano), ErrRecordMoved)
		}
		next, err := cur.Remove(cur.CurrentContainerID, at)
		return next, outbox.TransitionDetails{Reason: outbox.ReasonCleanup}, err
	})
}

// DeleteFinishedJobs deletes, in batches of batch rows, the succeeded,
// failed and cancelled jobs that finished more than olderThan ago (by the
// database's clock, which dates finished_at). It returns how many went.
// The idempotency keys of deleted jobs are forgotten: a job inserted again
// with such a key is a new job.
func (s *Store) DeleteFinishedJobs(ctx context.Context, olderThan time.Duration, batch int) (int64, error) {
	return deleteInBatches(ctx, "finished jobs", olderThan, batch, func(ctx context.Context) (int64, error) {
		return s.q.DeleteFinishedJobs(ctx, dbsqlc.DeleteFinishedJobsParams{RetentionMs: olderThan.Milliseconds(), MaxRows: int32(batch)})
	})
}

// DeleteReadOutbox deletes, in batches of batch rows, the outbox rows
// written more than olderThan ago (by the database's clock) that every
// registered outbox consumer has read past. With no consumer registered it
// deletes by age alone: a reader that is not registered must then keep up
// within the retention or miss events.
func (s *Store) DeleteReadOutbox(ctx context.Context, olderThan time.Duration, batch int) (int64, error) {
	return deleteInBatches(ctx, "outbox rows", olderThan, batch, func(ctx context.Context) (int64, error) {
		return s.q.DeleteReadOutbox(ctx, dbsqlc.DeleteReadOutboxParams{RetentionMs: olderThan.Milliseconds(), MaxRows: int32(batch)})
	})
}

// DeleteOldCrashReports deletes, in batches of batch rows, the crash
// reports captured more than olderThan ago (by the database's clock). A
// game also keeps no more than its last ten, whatever their age.
func (s *Store) DeleteOldCrashReports(ctx context.Context, olderThan time.Duration, batch int) (int64, error) {
	return deleteInBatches(ctx, "crash reports", olderThan, batch, func(ctx context.Context) (int64, error) {
		return s.q.DeleteOldCrashReports(ctx, dbsqlc.DeleteOldCrashReportsParams{RetentionMs: olderThan.Milliseconds(), MaxRows: int32(batch)})
	})
}

func deleteInBatches(ctx context.Context, what string, olderThan time.Duration, batch int, del func(context.Context) (int64, error)) (int64, error) {
	if olderThan <= 0 || batch <= 0 {
		return 0, fmt.Errorf("delete %s: retention and batch size must be positive, got %s and %d", what, olderThan, batch)
	}
	var total int64
	for {
		n, err := del(ctx)
		total += n
		if err != nil {
			return total, fmt.Errorf("delete %s older than %s: %w", what, olderThan, err)
		}
		if n < int64(batch) {
			return total, nil
		}
		if err := ctx.Err(); err != nil {
			return total, fmt.Errorf("delete %s older than %s: %w", what, olderThan, err)
		}
	}
}

// OutboxConsumer is a registered reader of the outbox and the position it
// has read up to, inclusive.
type OutboxConsumer struct {
	Name      string
	Position  Position
	UpdatedAt time.Time
}

// RegisterOutboxConsumer registers a reader of the outbox, at the
// beginning; a registered one keeps its position. From then on retention
// keeps every outbox row it has not read past.
func (s *Store) RegisterOutboxConsumer(ctx context.Context, name string) (OutboxConsumer, error) {
	if strings.TrimSpace(name) == "" {
		return OutboxConsumer{}, errors.New("register outbox consumer: the name must not be blank")
	}
	row, err := s.q.RegisterOutboxConsumer(ctx, name)
	if err != nil {
		return OutboxConsumer{}, fmt.Errorf("register outbox consumer %q: %w", name, err)
	}
	return consumerFromRow(row), nil
}

// AdvanceOutboxConsumer records that the consumer has read every event up
// to pos. The position never moves backwards: an older pos is ignored and
// the stored one returned.
func (s *Store) AdvanceOutboxConsumer(ctx context.Context, name string, pos Position) (OutboxConsumer, error) {
	row, err := s.q.AdvanceOutboxConsumer(ctx, dbsqlc.AdvanceOutboxConsumerParams{Name: name, LastXid: pos.Xid, LastID: pos.ID})
	if errors.Is(err, pgx.ErrNoRows) {
		return OutboxConsumer{}, fmt.Errorf("advance outbox consumer %q: %w", name, ErrConsumerNotFound)
	}
	if err != nil {
		return OutboxConsumer{}, fmt.Errorf("advance outbox consumer %q: %w", name, err)
	}
	return consumerFromRow(row), nil
}

// ListOutboxConsumers returns the registered consumers by name.
func (s *Store) ListOutboxConsumers(ctx context.Context) ([]OutboxConsumer, error) {
	rows, err := s.q.ListOutboxConsumers(ctx)
	if err != nil {
		return nil, fmt.Errorf("list outbox consumers: %w", err)
	}
	out := make([]OutboxConsumer, len(rows))
	for i, r := range rows {
		out[i] = consumerFromRow(r)
	}
	return out, nil
}

// UnregisterOutboxConsumer removes a consumer, so that retention no longer
// waits for it.
func (s *Store) UnregisterOutboxConsumer(ctx context.Context, name string) error {
	n, err := s.q.DeleteOutboxConsumer(ctx, name)
	if err != nil {
		return fmt.Errorf("unregister outbox consumer %q: %w", name, err)
	}
	if n == 0 {
		return fmt.Errorf("unregister outbox consumer %q: %w", name, ErrConsumerNotFound)
	}
	return nil
}

func consumerFromRow(r dbsqlc.OutboxConsumer) OutboxConsumer {
	return OutboxConsumer{Name: r.Name, Position: Position{Xid: r.LastXid, ID: r.LastID}, UpdatedAt: r.UpdatedAt.UTC()}
}
