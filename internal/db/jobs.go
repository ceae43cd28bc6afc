package db

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/galaxy/rtmanager/internal/db/dbsqlc"
	"github.com/galaxy/rtmanager/internal/domain/job"
	"github.com/galaxy/rtmanager/internal/domain/outbox"
	"github.com/galaxy/rtmanager/internal/domain/runtime"
)

// Job is one row of the job table. Kind, GameID and Payload are as the Game
// Master wrote them: untrusted until job.Decode has accepted them.
type Job struct {
	ID                int64
	HostID            string
	GameID            string
	Kind              string
	Payload           []byte
	Status            job.Status
	IdempotencyKey    string
	Traceparent       string
	Attempt           int
	MaxAttempts       int
	RunAfter          time.Time
	LeaseOwner        string
	LeaseExpiresAt    *time.Time
	CancelRequestedAt *time.Time
	LastError         string
	CreatedAt         time.Time
	StartedAt         *time.Time
	FinishedAt        *time.Time
}

// NewJob is what an enqueuer provides.
type NewJob struct {
	HostID         string
	GameID         string
	Kind           job.Kind
	Payload        []byte // JSON; nil means {}
	IdempotencyKey string
	Traceparent    string
	MaxAttempts    int       // 0: the agent's default for the kind
	RunAfter       time.Time // zero: now
}

// InsertJob enqueues a job with tx, which may be the caller's own
// transaction. When the game already has a job with the same idempotency
// key, nothing is inserted and that job is returned with inserted false.
func InsertJob(ctx context.Context, tx dbsqlc.DBTX, nj NewJob) (j Job, inserted bool, err error) {
	q := dbsqlc.New(tx)
	payload := nj.Payload
	if payload == nil {
		payload = []byte("{}")
	}
	var runAfter *time.Time
	if !nj.RunAfter.IsZero() {
		runAfter = &nj.RunAfter
	}
	row, err := q.InsertJob(ctx, dbsqlc.InsertJobParams{
		HostID:         nj.HostID,
		GameID:         nj.GameID,
		Kind:           string(nj.Kind),
		Payload:        payload,
		IdempotencyKey: nullable(nj.IdempotencyKey),
		Traceparent:    nullable(nj.Traceparent),
		MaxAttempts:    int32(nj.MaxAttempts),
		RunAfter:       runAfter,
	})
	if errors.Is(err, pgx.ErrNoRows) && nj.IdempotencyKey != "" {
		row, err = q.GetJobByIdempotencyKey(ctx, dbsqlc.GetJobByIdempotencyKeyParams{GameID: nj.GameID, IdempotencyKey: &nj.IdempotencyKey})
		if err != nil {
			return Job{}, false, fmt.Errorf("read job of game %s with idempotency key %q: %w", nj.GameID, nj.IdempotencyKey, err)
		}
		return jobFromRow(row), false, nil
	}
	if err != nil {
		return Job{}, false, fmt.Errorf("insert %s job for game %s: %w", nj.Kind, nj.GameID, err)
	}
	return jobFromRow(row), true, nil
}

// InsertJob enqueues a job in its own transaction.
func (s *Store) InsertJob(ctx context.Context, nj NewJob) (Job, bool, error) {
	return InsertJob(ctx, s.pool, nj)
}

// GetJob returns a job by id, or ErrJobNotFound.
func (s *Store) GetJob(ctx context.Context, id int64) (Job, error) {
	row, err := s.q.GetJob(ctx, id)
	if errors.Is(err, pgx.ErrNoRows) {
		return Job{}, fmt.Errorf("job %d: %w", id, ErrJobNotFound)
	}
	if err != nil {
		return Job{}, fmt.Errorf("read job %d: %w", id, err)
	}
	return jobFromRow(row), nil
}

// ListJobsByGame returns the jobs of a game in insertion order.
func (s *Store) ListJobsByGame(ctx context.Context, gameID string) ([]Job, error) {
	rows, err := s.q.ListJobsByGame(ctx, gameID)
	if err != nil {
		return nil, fmt.Errorf("list jobs of game %s: %w", gameID, err)
	}
	return jobsFromRows(rows), nil
}

// MaxCancels bounds the cancel requests one Claim lists; a claim that lists
// this many may have left some out, so the worker looks again.
const MaxCancels = 100

// Claim is what one claim statement returns: the jobs it claimed and the
// state of the host's queue the worker waits on.
type Claim struct {
	// Jobs are the claimed jobs, now running under the owner's lease.
	Jobs []Job
	// NextDue is how long from the statement until the host's earliest
	// job that is not yet due (and heads its game's line) falls due, at
	// most a day; 0 when there is none. It is measured on the database's
	// clock, so a timer armed with it is not thrown off by the agent's.
	NextDue time.Duration
	// CancelIDs are queued jobs of the host whose cancel was asked for
	// (cancel_requested_at set by the Game Master), whatever their
	// run_after; they are never claimed. At most MaxCancels.
	CancelIDs []int64
}

// Claim takes up to max due jobs of host for owner, each at the head of its
// game's line, leases them for lease, and reports the queue's next due time
// and pending cancel requests, all in one statement.
func (s *Store) Claim(ctx context.Context, hostID, owner string, max int, lease time.Duration) (Claim, error) {
	rows, err := s.q.ClaimJobs(ctx, dbsqlc.ClaimJobsParams{
		HostID: hostID, LeaseOwner: owner, MaxJobs: int32(max), LeaseMs: lease.Milliseconds(),
		MaxCancels: MaxCancels,
	})
	if err != nil {
		return Claim{}, fmt.Errorf("claim jobs of host %s: %w", hostID, err)
	}
	var c Claim
	for i, r := range rows {
		if i == 0 {
			c.NextDue = time.Duration(r.NextDueInUs) * time.Microsecond
			c.CancelIDs = r.CancelIds
		}
		if r.ID != nil {
			c.Jobs = append(c.Jobs, claimedJob(r))
		}
	}
	// In id order, the order they were queued in, whatever order the
	// UPDATE returned them in: the worker starts them in this order.
	slices.SortFunc(c.Jobs, func(a, b Job) int { return cmp.Compare(a.ID, b.ID) })
	return c, nil
}

// ClaimJobs is Claim for callers that want only the claimed jobs.
func (s *Store) ClaimJobs(ctx context.Context, hostID, owner string, max int, lease time.Duration) ([]Job, error) {
	c, err := s.Claim(ctx, hostID, owner, max, lease)
	return c.Jobs, err
}

// claimedJob turns a claimed row into a Job. The claim joins its jobs to
// one row of queue state, so sqlc types every job column as nullable; a
// claimed job has every NOT NULL column set.
func claimedJob(r dbsqlc.ClaimJobsRow) Job {
	return jobFromRow(dbsqlc.Job{
		ID:                orZero(r.ID),
		HostID:            orZero(r.HostID),
		GameID:            orZero(r.GameID),
		Kind:              orZero(r.Kind),
		Payload:           r.Payload,
		Status:            orZero(r.Status),
		IdempotencyKey:    r.IdempotencyKey,
		Traceparent:       r.Traceparent,
		Attempt:           orZero(r.Attempt),
		MaxAttempts:       orZero(r.MaxAttempts),
		RunAfter:          orZero(r.RunAfter),
		LeaseOwner:        r.LeaseOwner,
		LeaseExpiresAt:    r.LeaseExpiresAt,
		CancelRequestedAt: r.CancelRequestedAt,
		LastError:         r.LastError,
		CreatedAt:         orZero(r.CreatedAt),
		StartedAt:         r.StartedAt,
		FinishedAt:        r.FinishedAt,
	})
}

// ExtendLeases renews owner's leases on ids. It returns the ids still held,
// each with whether a cancel was requested; an id missing from the result
// was lost and must be dropped by its worker.
func (s *Store) ExtendLeases(ctx context.Context, owner string, ids []int64, lease time.Duration) (map[int64]bool, error) {
	rows, err := s.q.ExtendLeases(ctx, dbsqlc.ExtendLeasesParams{LeaseOwner: owner, Ids: ids, LeaseMs: lease.Milliseconds()})
	if err != nil {
		return nil, fmt.Errorf("extend leases of %s: %w", owner, err)
	}
	held := make(map[int64]bool, len(rows))
	for _, r := range rows {
		held[r.ID] = r.CancelRequestedAt != nil
	}
	return held, nil
}

// RequeueExpiredLeases gives the host's jobs whose lease expired back to the
// queue and returns their ids.
func (s *Store) RequeueExpiredLeases(ctx context.Context, hostID string) ([]int64, error) {
	ids, err := s.q.RequeueExpiredLeases(ctx, hostID)
	if err != nil {
		return nil, fmt.Errorf("requeue expired leases of host %s: %w", hostID, err)
	}
	return ids, nil
}

// Outcome is how a job ended.
type Outcome struct {
	// Status is succeeded, failed or cancelled.
	Status job.Status
	// Error is stored on a failed job.
	Error string
	// Record, when set, is the record transition the job's work caused; it
	// commits with the job's final state or not at all.
	Record Decision
	// Check, when set, is a look at the game's container at commit time,
	// after Record and the outcome's event, in the same transaction: what
	// happened to the container since the work (an engine that died at
	// once), recorded with its own reason. Like an observer's decision it
	// gets the game's job in progress, which is no longer this one.
	Check ObservedDecision

	// ImageDigest, for a succeeded job that learnt the registry digest of
	// its image (start, change_image, pull), goes into its job.succeeded
	// event.
	ImageDigest string
}

// FinishJob ends a job that owner still holds, in one transaction with the
// record's transition (if any), the outcome's outbox event and the check's
// transition (if any). It returns
// ErrLeaseLost when the job is no longer owner's; an error of the decision
// is returned as it is and nothing is written.
func (s *Store) FinishJob(ctx context.Context, j Job, owner string, o Outcome) (RecordChange, error) {
	if !o.Status.IsFinal() {
		return RecordChange{}, fmt.Errorf("finish job %d: status %q is not final", j.ID, o.Status)
	}
	var change RecordChange
	err := s.inGameTx(ctx, j.GameID, func(q *dbsqlc.Queries) error {
		row, err := q.FinishJob(ctx, dbsqlc.FinishJobParams{
			ID: j.ID, LeaseOwner: owner, Status: string(o.Status), LastError: nullable(o.Error),
		})
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("finish job %d: %w", j.ID, ErrLeaseLost)
		}
		if err != nil {
			return fmt.Errorf("finish job %d: %w", j.ID, err)
		}
		if o.Record != nil {
			if change, err = s.applyDecision(ctx, q, j.GameID, o.Record); err != nil {
				return err
			}
		}
		ev, err := outbox.ForJobOutcomeImage(row.ID, row.GameID, row.HostID, row.Kind, o.Status, int(row.Attempt), o.Error, o.ImageDigest)
		if err != nil {
			return fmt.Errorf("build outcome event of job %d: %w", j.ID, err)
		}
		if _, err = insertEvent(ctx, q, ev); err != nil || o.Check == nil {
			return err
		}
		checked, err := s.applyDecision(ctx, q, j.GameID, func(cur *runtime.RuntimeRecord, at time.Time) (runtime.RuntimeRecord, outbox.TransitionDetails, error) {
			active, err := activeJob(ctx, q, row.HostID, j.GameID)
			if err != nil {
				return runtime.RuntimeRecord{}, outbox.TransitionDetails{}, err
			}
			return o.Check(cur, active, at)
		})
		if checked.Changed {
			change = checked
		}
		return err
	})
	if err != nil {
		return RecordChange{}, err
	}
	return change, nil
}

// RetryJob puts a job owner still holds back in the queue, due after delay,
// with the error of the attempt that failed.
func (s *Store) RetryJob(ctx context.Context, j Job, owner string, delay time.Duration, errMsg string) (Job, error) {
	row, err := s.q.RetryJob(ctx, dbsqlc.RetryJobParams{
		ID: j.ID, LeaseOwner: owner, DelayMs: delay.Milliseconds(), LastError: nullable(errMsg),
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return Job{}, fmt.Errorf("retry job %d: %w", j.ID, ErrLeaseLost)
	}
	if err != nil {
		return Job{}, fmt.Errorf("retry job %d: %w", j.ID, err)
	}
	return jobFromRow(row), nil
}

// orZero is *p, or T's zero value for nil.
func orZero[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

func jobsFromRows(rows []dbsqlc.Job) []Job {
	out := make([]Job, len(rows))
	for i, r := range rows {
		out[i] = jobFromRow(r)
	}
	return out
}

func jobFromRow(r dbsqlc.Job) Job {
	return Job{
		ID:                r.ID,
		HostID:            r.HostID,
		GameID:            r.GameID,
		Kind:              r.Kind,
		Payload:           r.Payload,
		Status:            statusOf(r.Status),
		IdempotencyKey:    deref(r.IdempotencyKey),
		Traceparent:       deref(r.Traceparent),
		Attempt:           int(r.Attempt),
		MaxAttempts:       int(r.MaxAttempts),
		RunAfter:          r.RunAfter.UTC(),
		LeaseOwner:        deref(r.LeaseOwner),
		LeaseExpiresAt:    utcPtr(r.LeaseExpiresAt),
		CancelRequestedAt: utcPtr(r.CancelRequestedAt),
		LastError:         deref(r.LastError),
		CreatedAt:         r.CreatedAt.UTC(),
		StartedAt:         utcPtr(r.StartedAt),
		FinishedAt:        utcPtr(r.FinishedAt),
	}
}
