// Package db is rtmanager's transactional store: the sqlc-generated queries
// (package dbsqlc, from queries/ and migrations/) and, on top of them, the
// operations the agent needs, each in one transaction. A record's change is
// never written without its outbox event, and a job's final state never
// without its outcome event.
package db

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/galaxy/rtmanager/internal/db/dbsqlc"
	"github.com/galaxy/rtmanager/internal/domain/job"
	"github.com/galaxy/rtmanager/internal/domain/outbox"
	"github.com/galaxy/rtmanager/internal/domain/runtime"
)

var (
	// ErrJobNotFound reports that no job has the given id.
	ErrJobNotFound = errors.New("job not found")
	// ErrLeaseLost reports that the job is no longer running under the
	// caller's lease: it expired and was requeued, or it was finished or
	// cancelled by someone else. The caller must drop the job.
	ErrLeaseLost = errors.New("job lease lost")
	// ErrHostTaken reports that another agent registered for the host since.
	ErrHostTaken = errors.New("host registered by another agent")
)

// Clock is the store's source of time for records. The database's clock
// drives jobs and leases; the record times come from here so that tests can
// control them.
type Clock interface{ Now() time.Time }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// SystemClock is the wall clock.
var SystemClock Clock = systemClock{}

// Store runs the agent's transactional operations on a pool.
type Store struct {
	pool  *pgxpool.Pool
	q     *dbsqlc.Queries
	clock Clock
}

// NewStore returns a store on pool; a nil clock means the wall clock.
func NewStore(pool *pgxpool.Pool, clock Clock) *Store {
	if clock == nil {
		clock = SystemClock
	}
	return &Store{pool: pool, q: dbsqlc.New(pool), clock: clock}
}

// Pool returns the store's pool.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// now returns the clock's time at the database's precision, so that a record
// read back equals the record written.
func (s *Store) now() time.Time { return s.clock.Now().UTC().Truncate(time.Microsecond) }

// Decision computes a record's next state. current is nil when the game has
// no record. Returning a record Equal to *current means "nothing to do": no
// write and no event. at is the time to use for the step.
type Decision func(current *runtime.RuntimeRecord, at time.Time) (next runtime.RuntimeRecord, details outbox.TransitionDetails, err error)

// RecordChange is the outcome of a decision.
type RecordChange struct {
	Record  runtime.RuntimeRecord
	Changed bool
	// EventID is the id of the outbox event written, 0 when unchanged.
	EventID int64
}

// UpdateRecord locks the game, reads its record, asks decide for the next
// state and, when it differs, writes the record and its outbox event in one
// transaction. Errors from decide are returned as they are and nothing is
// written.
func (s *Store) UpdateRecord(ctx context.Context, gameID string, decide Decision) (RecordChange, error) {
	var change RecordChange
	err := s.inGameTx(ctx, gameID, func(q *dbsqlc.Queries) error {
		var err error
		change, err = s.applyDecision(ctx, q, gameID, decide)
		return err
	})
	if err != nil {
		return RecordChange{}, err
	}
	return change, nil
}

// inGameTx runs f in a transaction that first takes the game's lock: every
// writer of a game's record or events does, so that the game's events
// commit in the order of their transactions.
func (s *Store) inGameTx(ctx context.Context, gameID string, f func(q *dbsqlc.Queries) error) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		q := s.q.WithTx(tx)
		if err := q.LockGame(ctx, gameID); err != nil {
			return fmt.Errorf("lock game %s: %w", gameID, err)
		}
		return f(q)
	})
}

// applyDecision runs inside a transaction that holds the game's lock.
func (s *Store) applyDecision(ctx context.Context, q *dbsqlc.Queries, gameID string, decide Decision) (RecordChange, error) {
	var current *runtime.RuntimeRecord
	row, err := q.GetRecordForUpdate(ctx, gameID)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return RecordChange{}, fmt.Errorf("read record of game %s: %w", gameID, err)
	default:
		rec := recordFromRow(row)
		current = &rec
	}
	next, details, err := decide(current, s.now())
	if err != nil {
		return RecordChange{}, err
	}
	if current != nil && next.Equal(*current) {
		return RecordChange{Record: next}, nil
	}
	if next.GameID != gameID {
		return RecordChange{}, fmt.Errorf("decision for game %s returned a record of game %q", gameID, next.GameID)
	}
	if err := next.Validate(); err != nil {
		return RecordChange{}, fmt.Errorf("refusing to write an invalid record of game %s: %w", gameID, err)
	}
	if err := q.UpsertRecord(ctx, upsertParams(next)); err != nil {
		return RecordChange{}, fmt.Errorf("write record of game %s: %w", gameID, err)
	}
	ev, err := outbox.ForTransition(current, next, details)
	if err != nil {
		return RecordChange{}, fmt.Errorf("build outbox event for game %s: %w", gameID, err)
	}
	id, err := insertEvent(ctx, q, ev)
	if err != nil {
		return RecordChange{}, err
	}
	if details.Crash != nil && next.Status == runtime.StatusStopped {
		if err := insertCrashReport(ctx, q, *details.Crash, id); err != nil {
			return RecordChange{}, err
		}
	}
	return RecordChange{Record: next, Changed: true, EventID: id}, nil
}

func insertEvent(ctx context.Context, q *dbsqlc.Queries, ev outbox.Event) (int64, error) {
	var jobID *int64
	if ev.JobID != 0 {
		jobID = &ev.JobID
	}
	row, err := q.InsertOutboxEvent(ctx, dbsqlc.InsertOutboxEventParams{
		Type: string(ev.Type), HostID: ev.HostID, GameID: ev.GameID, JobID: jobID, Payload: ev.Payload,
	})
	if err != nil {
		return 0, fmt.Errorf("append %s event for game %s: %w", ev.Type, ev.GameID, err)
	}
	return row.ID, nil
}

// GetRecord returns the record of a game, or runtime.ErrNotFound.
func (s *Store) GetRecord(ctx context.Context, gameID string) (runtime.RuntimeRecord, error) {
	row, err := s.q.GetRecord(ctx, gameID)
	if errors.Is(err, pgx.ErrNoRows) {
		return runtime.RuntimeRecord{}, fmt.Errorf("game %s: %w", gameID, runtime.ErrNotFound)
	}
	if err != nil {
		return runtime.RuntimeRecord{}, fmt.Errorf("read record of game %s: %w", gameID, err)
	}
	return recordFromRow(row), nil
}

// ListLiveRecords returns the running and stopped records of a host, read
// in one snapshot.
func (s *Store) ListLiveRecords(ctx context.Context, hostID string) ([]runtime.RuntimeRecord, error) {
	rows, err := s.q.ListLiveRecordsByHost(ctx, hostID)
	if err != nil {
		return nil, fmt.Errorf("list live records of host %s: %w", hostID, err)
	}
	return recordsFromRows(rows), nil
}

// ListRecords returns the records of a host, optionally of one status only.
func (s *Store) ListRecords(ctx context.Context, hostID string, status runtime.Status) ([]runtime.RuntimeRecord, error) {
	var st *string
	if status != "" {
		v := string(status)
		st = &v
	}
	rows, err := s.q.ListRecordsByHost(ctx, dbsqlc.ListRecordsByHostParams{HostID: hostID, Status: st})
	if err != nil {
		return nil, fmt.Errorf("list records of host %s: %w", hostID, err)
	}
	return recordsFromRows(rows), nil
}

func recordsFromRows(rows []dbsqlc.RuntimeRecord) []runtime.RuntimeRecord {
	out := make([]runtime.RuntimeRecord, len(rows))
	for i, r := range rows {
		out[i] = recordFromRow(r)
	}
	return out
}

func recordFromRow(r dbsqlc.RuntimeRecord) runtime.RuntimeRecord {
	return runtime.RuntimeRecord{
		GameID:             r.GameID,
		HostID:             r.HostID,
		Status:             runtime.Status(r.Status),
		CurrentContainerID: deref(r.CurrentContainerID),
		CurrentImageRef:    deref(r.CurrentImageRef),
		CurrentImageDigest: deref(r.CurrentImageDigest),
		EngineEndpoint:     r.EngineEndpoint,
		StatePath:          r.StatePath,
		DockerNetwork:      r.DockerNetwork,
		StartedAt:          utcPtr(r.StartedAt),
		StoppedAt:          utcPtr(r.StoppedAt),
		RemovedAt:          utcPtr(r.RemovedAt),
		LastOpAt:           r.LastOpAt.UTC(),
		CreatedAt:          r.CreatedAt.UTC(),
	}
}

func upsertParams(r runtime.RuntimeRecord) dbsqlc.UpsertRecordParams {
	return dbsqlc.UpsertRecordParams{
		GameID:             r.GameID,
		HostID:             r.HostID,
		Status:             string(r.Status),
		CurrentContainerID: nullable(r.CurrentContainerID),
		CurrentImageRef:    nullable(r.CurrentImageRef),
		CurrentImageDigest: nullable(r.CurrentImageDigest),
		EngineEndpoint:     r.EngineEndpoint,
		StatePath:          r.StatePath,
		DockerNetwork:      r.DockerNetwork,
		StartedAt:          r.StartedAt,
		StoppedAt:          r.StoppedAt,
		RemovedAt:          r.RemovedAt,
		LastOpAt:           r.LastOpAt,
		CreatedAt:          r.CreatedAt,
	}
}

// nullable bridges the domain's "empty string" to SQL NULL.
func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// statusOf keeps the job package's vocabulary at the store boundary.
func statusOf(s string) job.Status { return job.Status(s) }
