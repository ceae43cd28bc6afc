package db_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/testutil/wait"
)

// beginWriter opens a transaction that writes events of gameID the way the
// agent does: the game's lock first, then the rows.
func beginWriter(t *testing.T, pool *pgxpool.Pool, gameID string) pgx.Tx {
	t.Helper()
	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(1920233, hashtext($1::text))", gameID); err != nil {
		t.Fatal(err)
	}
	return tx
}

// appendEvent writes one event in tx and returns its id.
func appendEvent(ctx context.Context, tx pgx.Tx, gameID string) (int64, error) {
	var id int64
	err := tx.QueryRow(ctx, `INSERT INTO outbox (type, host_id, game_id, payload)
		VALUES ('job.succeeded', 'host-a', $1, '{}') RETURNING id`, gameID).Scan(&id)
	return id, err
}

func ids(evs []db.StoredEvent) []int64 {
	out := make([]int64, len(evs))
	for i, e := range evs {
		out[i] = e.ID
	}
	return out
}

// fetchUntil fetches with c until it has handed out want events in all.
func fetchUntil(t *testing.T, c *db.Consumer, want int) []db.StoredEvent {
	t.Helper()
	var got []db.StoredEvent
	wait.For(t, 30*time.Second, fmt.Sprintf("%d events for consumer %s", want, c.Name()), func() bool {
		evs, err := c.Fetch(context.Background(), 0)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, evs...)
		return len(got) >= want
	})
	if len(got) != want {
		t.Fatalf("consumer %s: got %d events, want %d: %v", c.Name(), len(got), want, ids(got))
	}
	return got
}

// TestOutOfOrderCommitIsNotSkipped: writer A takes the lower id, writer B
// the higher one and commits first; a reader polls in between. A reader of
// "id > last" would take B, move past A's id and lose A for ever. The
// consumer hands out neither while A is open, then both, each once.
func TestOutOfOrderCommitIsNotSkipped(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	c, err := s.OpenConsumer(ctx, "gm", db.ConsumerOptions{})
	if err != nil {
		t.Fatal(err)
	}

	txA := beginWriter(t, s.Pool(), "game-a")
	idA, err := appendEvent(ctx, txA, "game-a")
	if err != nil {
		t.Fatal(err)
	}
	txB := beginWriter(t, s.Pool(), "game-b")
	idB, err := appendEvent(ctx, txB, "game-b")
	if err != nil {
		t.Fatal(err)
	}
	if idA >= idB {
		t.Fatalf("setup: A's id %d should be below B's %d", idA, idB)
	}
	if err := txB.Commit(ctx); err != nil {
		t.Fatal(err)
	}

	// The naive reader sees B alone: the skip this design prevents.
	var naive []int64
	rows, err := s.Pool().Query(ctx, "SELECT id FROM outbox WHERE id > 0 ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	if naive, err = pgx.CollectRows(rows, pgx.RowTo[int64]); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(naive, []int64{idB}) {
		t.Fatalf("naive reader: got %v, want only B (%d)", naive, idB)
	}

	// The consumer polls while A is open: nothing is handed out, and the
	// held-back check says why it should look again soon.
	for range 3 {
		evs, err := c.Fetch(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != 0 {
			t.Fatalf("events handed out while an older writer is open: %v", ids(evs))
		}
	}
	if held, err := c.HeldBack(ctx); err != nil || !held {
		t.Fatalf("HeldBack = %v, %v; want true", held, err)
	}

	if err := txA.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	got := fetchUntil(t, c, 2)
	// (xid, id) order: A's transaction took its xid before B's. A game's
	// events are in commit order; these two overlapping transactions of
	// different games are handed out in the order they started writing.
	if !slices.Equal(ids(got), []int64{idA, idB}) {
		t.Fatalf("got %v, want [%d %d]", ids(got), idA, idB)
	}
	if err := c.Ack(ctx, got[1].Position); err != nil {
		t.Fatal(err)
	}
	if evs, err := c.Fetch(ctx, 0); err != nil || len(evs) != 0 {
		t.Fatalf("after both: %v, %v", ids(evs), err)
	}
}

// TestOneGameInCommitOrder: writers of one game serialise on its lock, so
// its events come in commit order whatever the interleaving.
func TestOneGameInCommitOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	c, err := s.OpenConsumer(ctx, "gm", db.ConsumerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	txA := beginWriter(t, s.Pool(), "g")
	idA, err := appendEvent(ctx, txA, "g")
	if err != nil {
		t.Fatal(err)
	}
	idB := make(chan int64, 1)
	errB := make(chan error, 1)
	go func() {
		tx, err := s.Pool().Begin(ctx)
		if err != nil {
			errB <- err
			return
		}
		defer func() { _ = tx.Rollback(ctx) }()
		// Blocks until A commits.
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(1920233, hashtext('g'))"); err != nil {
			errB <- err
			return
		}
		id, err := appendEvent(ctx, tx, "g")
		if err == nil {
			err = tx.Commit(ctx)
		}
		idB <- id
		errB <- err
	}()
	if err := txA.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-errB; err != nil {
		t.Fatal(err)
	}
	got := fetchUntil(t, c, 2)
	if !slices.Equal(ids(got), []int64{idA, <-idB}) {
		t.Fatalf("got %v, want A (%d) then B", ids(got), idA)
	}
}

// TestCrashBeforeAckRedelivers: an event handed out but not acknowledged
// comes again to the next consumer of the name; once acknowledged, never.
func TestCrashBeforeAckRedelivers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	for _, g := range []string{"g1", "g2"} {
		tx := beginWriter(t, s.Pool(), g)
		if _, err := appendEvent(ctx, tx, g); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}

	first, err := s.OpenConsumer(ctx, "gm", db.ConsumerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	evs := fetchUntil(t, first, 2)
	// Processed the first, crashed before acknowledging: the process goes
	// away with its in-memory position.
	second, err := s.OpenConsumer(ctx, "gm", db.ConsumerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	again, err := second.Fetch(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ids(again), ids(evs)) {
		t.Fatalf("after a crash before ack: got %v, want %v again", ids(again), ids(evs))
	}
	// Same ids: the consumer can tell it has seen them.
	if err := second.Ack(ctx, again[0].Position); err != nil {
		t.Fatal(err)
	}
	// An older ack (a late duplicate) does not move the cursor back.
	if err := second.Ack(ctx, db.Position{}); err != nil {
		t.Fatal(err)
	}
	third, err := s.OpenConsumer(ctx, "gm", db.ConsumerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rest, err := third.Fetch(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ids(rest), ids(evs[1:])) {
		t.Fatalf("after acknowledging the first: got %v, want %v", ids(rest), ids(evs[1:]))
	}
	// Rewind hands out again what is not acknowledged.
	if err := third.Rewind(ctx); err != nil {
		t.Fatal(err)
	}
	if r, _ := third.Fetch(ctx, 0); !slices.Equal(ids(r), ids(evs[1:])) {
		t.Fatalf("after rewind: got %v", ids(r))
	}
	if err := third.Ack(ctx, evs[1].Position); err != nil {
		t.Fatal(err)
	}
	fourth, err := s.OpenConsumer(ctx, "gm", db.ConsumerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := fourth.Fetch(ctx, 0); err != nil || len(r) != 0 {
		t.Fatalf("acknowledged events delivered again: %v, %v", ids(r), err)
	}
	if err := s.UnregisterOutboxConsumer(ctx, "gm"); err != nil {
		t.Fatal(err)
	}
	if err := fourth.Ack(ctx, evs[1].Position); !errors.Is(err, db.ErrConsumerNotFound) {
		t.Fatalf("ack of an unregistered consumer: %v", err)
	}
}

// TestRunHandlerFailureRedelivers: Run stops on a handler error without
// acknowledging that event; the next Run delivers it again, and after its
// acknowledgement no Run delivers it any more.
func TestRunHandlerFailureRedelivers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	tx := beginWriter(t, s.Pool(), "g1")
	id, err := appendEvent(ctx, tx, "g1")
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	opts := db.ConsumerOptions{PollInterval: 20 * time.Millisecond}
	c, err := s.OpenConsumer(ctx, "gm", opts)
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	err = c.Run(ctx, func(context.Context, db.StoredEvent) error { return boom })
	var he *db.HandlerError
	if !errors.As(err, &he) || !errors.Is(err, boom) || he.Event.ID != id {
		t.Fatalf("Run = %v; want a HandlerError for event %d", err, id)
	}

	runCtx, cancel := context.WithCancel(ctx)
	var seen []int64
	if err := c.Run(runCtx, func(_ context.Context, ev db.StoredEvent) error {
		seen = append(seen, ev.ID)
		cancel()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(seen, []int64{id}) {
		t.Fatalf("second run saw %v, want [%d]", seen, id)
	}
	reg, err := s.GetOutboxConsumer(ctx, "gm")
	if err != nil || reg.Position.ID != id {
		t.Fatalf("acknowledged position %+v, %v; want id %d", reg, err, id)
	}
	fresh, err := s.OpenConsumer(ctx, "gm", opts)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := fresh.Fetch(ctx, 0); err != nil || len(r) != 0 {
		t.Fatalf("acknowledged event delivered again: %v, %v", ids(r), err)
	}
}

// TestConsumersUnderLoad: 16 writers append events in short transactions
// that commit in any order, some games shared between writers; consumer
// "gm" runs twice (two processes, one lock), "audit" with LISTEN and
// "poller" without. Each consumer gets every event exactly once, each
// game's events in commit order.
func TestConsumersUnderLoad(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	const writers, txPerWriter = 16, 25

	type delivery struct {
		mu   sync.Mutex
		evs  []db.StoredEvent
		dups int
		seen map[int64]bool
	}
	consumers := map[string]*delivery{}
	runCtx, stop := context.WithCancel(ctx)
	var runs sync.WaitGroup
	start := func(name string, opts db.ConsumerOptions) {
		d := consumers[name]
		if d == nil {
			d = &delivery{seen: map[int64]bool{}}
			consumers[name] = d
		}
		c, err := s.OpenConsumer(ctx, name, opts)
		if err != nil {
			t.Fatal(err)
		}
		runs.Add(1)
		go func() {
			defer runs.Done()
			err := c.Run(runCtx, func(_ context.Context, ev db.StoredEvent) error {
				d.mu.Lock()
				defer d.mu.Unlock()
				if d.seen[ev.ID] {
					d.dups++
				}
				d.seen[ev.ID] = true
				d.evs = append(d.evs, ev)
				return nil
			})
			if err != nil {
				t.Errorf("consumer %s: %v", name, err)
			}
		}()
	}
	fast := db.ConsumerOptions{PollInterval: 200 * time.Millisecond, BatchSize: 17}
	start("gm", fast)
	start("gm", fast)
	start("audit", fast)
	start("poller", db.ConsumerOptions{PollInterval: 20 * time.Millisecond, NoListen: true, BatchSize: 50})
	t.Cleanup(func() { stop(); runs.Wait() })

	var wg sync.WaitGroup
	var total sync.Map
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range txPerWriter {
				// Pairs of writers share a game; every third
				// transaction writes two events.
				game := fmt.Sprintf("g%d", (w/2)*100+i%3)
				err := pgx.BeginFunc(ctx, s.Pool(), func(tx pgx.Tx) error {
					if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(1920233, hashtext($1::text))", game); err != nil {
						return err
					}
					n := 1 + i%3/2
					for range n {
						id, err := appendEvent(ctx, tx, game)
						if err != nil {
							return err
						}
						total.Store(id, game)
					}
					// Hold some transactions open a little so that
					// commits overtake each other.
					_, err := tx.Exec(ctx, "SELECT pg_sleep(random() * 0.005)")
					return err
				})
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var want []int64
	total.Range(func(k, _ any) bool { want = append(want, k.(int64)); return true })
	slices.Sort(want)

	for name, d := range consumers {
		wait.For(t, 60*time.Second, fmt.Sprintf("all %d events at consumer %s", len(want), name), func() bool {
			d.mu.Lock()
			defer d.mu.Unlock()
			return len(d.seen) == len(want)
		})
	}
	stop()
	runs.Wait()
	for name, d := range consumers {
		if d.dups != 0 || len(d.evs) != len(want) {
			t.Errorf("consumer %s: %d deliveries with %d duplicates for %d events", name, len(d.evs), d.dups, len(want))
		}
		got := slices.Sorted(func(yield func(int64) bool) {
			for _, e := range d.evs {
				if !yield(e.ID) {
					return
				}
			}
		})
		if !slices.Equal(got, want) {
			t.Errorf("consumer %s: delivered ids differ from the written ones", name)
		}
		last := map[string]int64{}
		for i, e := range d.evs {
			if i > 0 && !(d.evs[i-1].Xid < e.Xid || d.evs[i-1].Xid == e.Xid && d.evs[i-1].ID < e.ID) {
				t.Errorf("consumer %s: event %d handed out after %d, out of (xid, id) order", name, e.ID, d.evs[i-1].ID)
			}
			if e.ID < last[e.GameID] {
				t.Errorf("consumer %s: game %s: event %d after %d, not in commit order", name, e.GameID, e.ID, last[e.GameID])
			}
			last[e.GameID] = e.ID
		}
		reg, err := s.GetOutboxConsumer(ctx, name)
		if err != nil || reg.Position != d.evs[len(d.evs)-1].Position {
			t.Errorf("consumer %s: acknowledged %+v, %v; want the last event", name, reg, err)
		}
	}
}
