package db

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/galaxy/rtmanager/internal/db/dbsqlc"
	"github.com/galaxy/rtmanager/internal/domain/outbox"
)

// This file holds the gap-free outbox consumer: a named reader with a
// durable position in outbox_consumers, acknowledge-after-processing
// semantics, a LISTEN rtm_outbox wake-up and a polling fallback.
//
// Why it never skips: ReadOutbox returns only events of transactions below
// the current snapshot's xmin, all of which have finished, in (xid, id)
// order. An event that is not readable yet belongs to a transaction at or
// above xmin, so it sorts after every event already returned: resuming after
// the last (xid, id) delivered can never pass over it. For one game the
// order is the commit order, because writers of a game take the game's lock
// before their first write (which is what assigns the xid). Events of
// different games written by concurrent transactions come in xid order,
// which may differ from their commit order; a transaction that started
// after another committed always sorts after it.
//
// Delivery is at least once: an event is delivered again until its consumer
// acknowledges it, so a consumer that crashes between processing an event
// and acknowledging it sees the event again. Event ids are stable (the
// outbox row's id): a consumer deduplicates with them.

// OutboxNotifyChannel is the channel a trigger notifies once per statement
// that appends outbox events.
const OutboxNotifyChannel = "rtm_outbox"

// ConsumerOptions tune a Consumer; zero values take the defaults.
type ConsumerOptions struct {
	// BatchSize is how many events one read returns at most (default 100).
	BatchSize int
	// PollInterval bounds how long Run waits for a notification before it
	// reads anyway (default 2s). Without LISTEN it is the polling period.
	PollInterval time.Duration
	// HeldBackInterval is how soon Run reads again when committed events
	// wait behind a transaction that is still open (default 50ms): their
	// notification has been sent already, so waiting for one would wait
	// for the poll.
	HeldBackInterval time.Duration
	// NoListen disables LISTEN/NOTIFY (behind a transaction pooler such as
	// PgBouncer in transaction mode): Run polls every PollInterval.
	NoListen bool
	// OnError, when set, is told of database errors that Run rides out
	// (it retries after PollInterval). Handler errors are not retried:
	// Run returns them.
	OnError func(error)
}

func (o ConsumerOptions) withDefaults() ConsumerOptions {
	if o.BatchSize <= 0 {
		o.BatchSize = 100
	}
	if o.PollInterval <= 0 {
		o.PollInterval = 2 * time.Second
	}
	if o.HeldBackInterval <= 0 {
		o.HeldBackInterval = 50 * time.Millisecond
	}
	return o
}

// Consumer reads the outbox for one registered consumer name. Fetch hands
// out events after the last one handed out; Ack records durably that the
// consumer has processed every event up to a position; a new Consumer of
// the same name (after a crash, say) starts after the last acknowledged
// event. A Consumer is safe for concurrent use, but one name should have
// one active reader at a time: Run guarantees it across processes with an
// advisory lock, Fetch does not.
type Consumer struct {
	store *Store
	name  string
	opts  ConsumerOptions

	mu    sync.Mutex
	next  Position // handed out up to
	acked Position // acknowledged up to, as last read or written
}

// OpenConsumer registers name (at the beginning of the outbox when it is
// new) and returns a consumer positioned after its last acknowledged event.
func (s *Store) OpenConsumer(ctx context.Context, name string, opts ConsumerOptions) (*Consumer, error) {
	reg, err := s.RegisterOutboxConsumer(ctx, name)
	if err != nil {
		return nil, err
	}
	return &Consumer{store: s, name: name, opts: opts.withDefaults(), next: reg.Position, acked: reg.Position}, nil
}

// GetOutboxConsumer returns a registered consumer, or ErrConsumerNotFound.
func (s *Store) GetOutboxConsumer(ctx context.Context, name string) (OutboxConsumer, error) {
	row, err := s.q.GetOutboxConsumer(ctx, name)
	if errors.Is(err, pgx.ErrNoRows) {
		return OutboxConsumer{}, fmt.Errorf("outbox consumer %q: %w", name, ErrConsumerNotFound)
	}
	if err != nil {
		return OutboxConsumer{}, fmt.Errorf("read outbox consumer %q: %w", name, err)
	}
	return consumerFromRow(row), nil
}

// OutboxHeldBack reports whether committed events after pos are waiting
// behind a transaction that is still open (in any database of the cluster),
// and so are not readable yet.
func (s *Store) OutboxHeldBack(ctx context.Context, after Position) (bool, error) {
	held, err := s.q.OutboxHeldBack(ctx, dbsqlc.OutboxHeldBackParams{AfterXid: after.Xid, AfterID: after.ID})
	if err != nil {
		return false, fmt.Errorf("look for held-back outbox events: %w", err)
	}
	return held, nil
}

// TailOutbox returns the last limit readable events, oldest first. A
// reader that follows on from the last of them (or from the zero Position
// when there is none) misses nothing.
func (s *Store) TailOutbox(ctx context.Context, limit int) ([]StoredEvent, error) {
	if limit <= 0 {
		return nil, nil
	}
	rows, err := s.q.TailOutbox(ctx, int32(limit))
	if err != nil {
		return nil, fmt.Errorf("read the outbox tail: %w", err)
	}
	out := make([]StoredEvent, len(rows))
	for i, r := range rows {
		out[len(rows)-1-i] = eventFromRow(r)
	}
	return out, nil
}

func eventFromRow(r dbsqlc.Outbox) StoredEvent {
	var jobID int64
	if r.JobID != nil {
		jobID = *r.JobID
	}
	return StoredEvent{
		Position:  Position{Xid: r.Xid, ID: r.ID},
		Type:      outbox.Type(r.Type),
		HostID:    r.HostID,
		GameID:    r.GameID,
		JobID:     jobID,
		Payload:   r.Payload,
		CreatedAt: r.CreatedAt.UTC(),
	}
}

// Name returns the consumer's name.
func (c *Consumer) Name() string { return c.name }

// Position returns the position of the last event handed out.
func (c *Consumer) Position() Position {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.next
}

// Acked returns the last acknowledged position this consumer knows of.
func (c *Consumer) Acked() Position {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.acked
}

// Fetch returns up to limit (BatchSize when limit <= 0) events after the
// last one handed out, in order, and moves past them. It returns no events
// when none is readable yet. The events are not acknowledged: call Ack
// once they are processed.
func (c *Consumer) Fetch(ctx context.Context, limit int) ([]StoredEvent, error) {
	if limit <= 0 {
		limit = c.opts.BatchSize
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	evs, err := c.store.ReadOutbox(ctx, c.next, limit)
	if err != nil {
		return nil, fmt.Errorf("outbox consumer %q: %w", c.name, err)
	}
	if len(evs) > 0 {
		c.next = evs[len(evs)-1].Position
	}
	return evs, nil
}

// Ack records that the consumer has processed every event up to and
// including pos. The stored position never moves backwards, and it
// survives the process: a consumer opened later starts after it.
// ErrConsumerNotFound when the consumer was unregistered.
func (c *Consumer) Ack(ctx context.Context, pos Position) error {
	reg, err := c.store.AdvanceOutboxConsumer(ctx, c.name, pos)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.acked = reg.Position
	if less(c.next, c.acked) {
		c.next = c.acked
	}
	return nil
}

// Rewind reloads the acknowledged position, so that the next Fetch hands
// out again every event that was not acknowledged: what a consumer does
// after failing to process an event.
func (c *Consumer) Rewind(ctx context.Context) error {
	reg, err := c.store.GetOutboxConsumer(ctx, c.name)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.next, c.acked = reg.Position, reg.Position
	return nil
}

// HeldBack reports whether committed events after the consumer's position
// wait behind a transaction that is still open.
func (c *Consumer) HeldBack(ctx context.Context) (bool, error) {
	return c.store.OutboxHeldBack(ctx, c.Position())
}

// Handler processes one event. Returning an error stops Run, with the
// event not acknowledged.
type Handler func(ctx context.Context, ev StoredEvent) error

// HandlerError is what Run returns when the handler failed.
type HandlerError struct {
	Consumer string
	Event    StoredEvent
	Err      error
}

func (e *HandlerError) Error() string {
	return fmt.Sprintf("outbox consumer %q: handling event %d (%s): %v", e.Consumer, e.Event.ID, e.Event.Type, e.Err)
}

func (e *HandlerError) Unwrap() error { return e.Err }

// Run delivers events to handle, one at a time and in order, and
// acknowledges each one after handle returns nil. It returns nil when ctx
// ends, and a *HandlerError when handle fails: that event and the ones
// after it are delivered again by the next Run. Database errors are ridden
// out (retried after PollInterval, reported to OnError).
//
// Run holds a session connection of its own for the consumer's advisory
// lock, so that one process at a time delivers a name's events (another
// Run of the same name waits, and takes over when the first ends or its
// connection dies), and for LISTEN rtm_outbox. After it takes the lock it
// starts again from the acknowledged position.
func (c *Consumer) Run(ctx context.Context, handle Handler) error {
	sess := &consumerSession{c: c}
	defer sess.close()
	for ctx.Err() == nil {
		if err := sess.ensure(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			c.report(err)
			sleep(ctx, c.opts.PollInterval)
			continue
		}
		evs, err := c.Fetch(ctx, c.opts.BatchSize)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			c.report(err)
			sleep(ctx, c.opts.PollInterval)
			continue
		}
		for _, ev := range evs {
			if err := handle(ctx, ev); err != nil {
				c.rewindTo(c.Acked())
				return &HandlerError{Consumer: c.name, Event: ev, Err: err}
			}
			// The event is processed: acknowledge it even when ctx has
			// just ended, or it would come again after a clean stop.
			ackCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			err := c.Ack(ackCtx, ev.Position)
			cancel()
			if err != nil {
				// Not acknowledged: it comes again, which the handler's
				// deduplication by event id absorbs.
				c.rewindTo(c.Acked())
				if ctx.Err() != nil {
					return nil
				}
				if errors.Is(err, ErrConsumerNotFound) {
					return err
				}
				c.report(err)
				sleep(ctx, c.opts.PollInterval)
				break
			}
			if ctx.Err() != nil {
				return nil
			}
		}
		if len(evs) == c.opts.BatchSize {
			continue
		}
		wait := c.opts.PollInterval
		if held, err := c.HeldBack(ctx); err == nil && held {
			wait = c.opts.HeldBackInterval
		}
		sess.wait(ctx, wait)
	}
	return nil
}

func (c *Consumer) rewindTo(p Position) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.next = p
}

func (c *Consumer) report(err error) {
	if c.opts.OnError != nil {
		c.opts.OnError(err)
	}
}

// consumerSession is Run's own connection: it holds the consumer's lock
// and, unless disabled, LISTEN rtm_outbox.
type consumerSession struct {
	c    *Consumer
	conn *pgx.Conn
}

// ensure opens the session and takes the consumer's lock, waiting while
// another session holds it. Each time the lock is (re)taken the consumer
// restarts from its acknowledged position: another process may have
// delivered and acknowledged events in between.
func (s *consumerSession) ensure(ctx context.Context) error {
	if s.conn != nil && !s.conn.IsClosed() {
		return nil
	}
	s.close()
	conn, err := pgx.ConnectConfig(ctx, s.c.store.pool.Config().ConnConfig.Copy())
	if err != nil {
		return fmt.Errorf("outbox consumer %q: open a session: %w", s.c.name, err)
	}
	q := dbsqlc.New(conn)
	for {
		held, err := q.TryLockOutboxConsumer(ctx, s.c.name)
		if err != nil {
			_ = conn.Close(context.Background())
			return fmt.Errorf("outbox consumer %q: take its lock: %w", s.c.name, err)
		}
		if held {
			break
		}
		if !sleep(ctx, s.c.opts.PollInterval) {
			_ = conn.Close(context.Background())
			return ctx.Err()
		}
	}
	if !s.c.opts.NoListen {
		if _, err := conn.Exec(ctx, "LISTEN "+OutboxNotifyChannel); err != nil {
			_ = conn.Close(context.Background())
			return fmt.Errorf("outbox consumer %q: LISTEN %s: %w", s.c.name, OutboxNotifyChannel, err)
		}
	}
	s.conn = conn
	if err := s.c.Rewind(ctx); err != nil {
		s.close()
		return err
	}
	return nil
}

// wait returns after a notification, after d, or when ctx ends. A broken
// session is closed: the next ensure opens another and takes the lock
// again.
func (s *consumerSession) wait(ctx context.Context, d time.Duration) {
	if s.conn == nil || s.c.opts.NoListen {
		sleep(ctx, d)
		return
	}
	wctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	_, err := s.conn.WaitForNotification(wctx)
	if err != nil && wctx.Err() == nil {
		s.c.report(fmt.Errorf("outbox consumer %q: wait for notifications: %w", s.c.name, err))
		s.close()
		return
	}
	// Notifications that arrived while events were handled wake the next
	// wait at once: one more read, which finds what they announced.
}

func (s *consumerSession) close() {
	if s.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Closing the session releases the advisory lock with it.
	_ = s.conn.Close(ctx)
	s.conn = nil
}

// sleep waits for d or the end of ctx; false when ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func less(a, b Position) bool {
	return a.Xid < b.Xid || (a.Xid == b.Xid && a.ID < b.ID)
}
