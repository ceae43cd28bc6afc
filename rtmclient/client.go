// Package rtmclient is the Go client of rtmanager for the Game Master and
// for tools: it enqueues lifecycle jobs inside the caller's own
// transaction, reads runtime records, jobs and hosts, cancels jobs, and
// consumes the outbox of events gap-free with a durable cursor per
// consumer.
//
// PostgreSQL is the only channel between the Game Master and the agents:
// a Client needs nothing but a pgx pool on the rtmanager database.
//
//	client := rtmclient.New(pool)
//	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
//		// ... the Game Master's own writes ...
//		_, _, err := client.Enqueue(ctx, tx, rtmclient.JobRequest{
//			HostID: "host-a", GameID: "g1",
//			Payload: rtmclient.StartPayload{ImageRef: "registry.example.com/galaxy/engine:1.4"},
//		})
//		return err
//	})
//
// The job commits with the caller's transaction or not at all. The
// agent of the named host runs it; its outcome, and every change of the
// game's runtime record, arrive as events (see Consumer).
package rtmclient

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/domain/runtime"
)

var (
	// ErrNotFound reports an unknown job id, game, host or consumer name.
	ErrNotFound = errors.New("not found")
	// ErrJobFinished reports a cancel of a job that has already ended.
	ErrJobFinished = errors.New("job already finished")
	// ErrJobNotRetryable reports a retry of a job that is not failed or
	// cancelled.
	ErrJobNotRetryable = errors.New("job not retryable")
	// ErrInvalidJob reports a job request refused before insert; the
	// error is a *ValidationError naming the field.
	ErrInvalidJob = errors.New("invalid job")
)

// DBTX is what Enqueue writes with: a pgx.Tx (the caller's transaction),
// a *pgx.Conn or a *pgxpool.Pool.
type DBTX interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Client reads and writes the rtmanager tables through a pgx pool.
type Client struct {
	pool  *pgxpool.Pool
	store *db.Store
	owned bool
}

// New returns a client on pool, which stays the caller's to close.
func New(pool *pgxpool.Pool) *Client {
	return &Client{pool: pool, store: db.NewStore(pool, nil)}
}

// Connect opens a pool on databaseURL (postgres://user[:password]@host[:port]/db?sslmode=...)
// and checks that the server answers, with an error that says what to
// fix. Close closes the pool.
func Connect(ctx context.Context, databaseURL string) (*Client, error) {
	pool, err := db.Connect(ctx, databaseURL, nil)
	if err != nil {
		return nil, err
	}
	c := New(pool)
	c.owned = true
	return c, nil
}

// Pool returns the client's pool.
func (c *Client) Pool() *pgxpool.Pool { return c.pool }

// Close closes the pool when Connect opened it.
func (c *Client) Close() {
	if c.owned {
		c.pool.Close()
	}
}

// translate maps the store's sentinels onto the client's.
func translate(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, db.ErrJobNotFound), errors.Is(err, runtime.ErrNotFound),
		errors.Is(err, db.ErrConsumerNotFound), errors.Is(err, db.ErrHostNotFound):
		return &wrapped{err: err, sentinel: ErrNotFound}
	case errors.Is(err, db.ErrJobFinished):
		return &wrapped{err: err, sentinel: ErrJobFinished}
	default:
		return err
	}
}

// wrapped keeps the store's message and answers errors.Is for the
// client's sentinel only: internal types stay out of the API.
type wrapped struct {
	err      error
	sentinel error
}

func (w *wrapped) Error() string { return w.err.Error() }
func (w *wrapped) Unwrap() error { return w.sentinel }

// ValidationError says which part of a job request is wrong and why.
type ValidationError struct {
	// Field names the part at fault in the job's terms: "host_id",
	// "game_id", "kind", "payload", "image_ref", `env["NAME"]`,
	// "limits.memory_bytes", "max_attempts", ...
	Field string
	// Message is the whole explanation.
	Message string
}

func (e *ValidationError) Error() string { return "invalid job: " + e.Message }
func (e *ValidationError) Unwrap() error { return ErrInvalidJob }

func invalid(field, format string, args ...any) error {
	return &ValidationError{Field: field, Message: field + ": " + fmt.Sprintf(format, args...)}
}
