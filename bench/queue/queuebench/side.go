package queuebench

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// side is one queue under test.
type side interface {
	name() string
	datname() string
	// reset empties the job table and compacts it.
	reset(ctx context.Context) error
	// prepare builds the client or worker on a warmed-up pool of its own,
	// ready to start.
	prepare(ctx context.Context) (*runner, error)
	// addFinished puts n finished jobs in the table, fast, as retention
	// has not yet removed them.
	addFinished(ctx context.Context, n int) error
	// settle runs VACUUM ANALYZE on the job table (untimed), so that every
	// round starts from a table as autovacuum would leave it.
	settle(ctx context.Context) error
	// verify checks that nothing is left to do and that n jobs were done
	// since reset (besides any added finished).
	verify(ctx context.Context, n int) error
}

// runner is a prepared client or worker.
type runner struct {
	// insert adds n no-op jobs, each of a game of its own, as the side's
	// producer inserts them (not timed).
	insert func(ctx context.Context, n int) error
	// begin starts working.
	begin func() error
	// done counts the jobs whose completion committed.
	done func() int64
	// failed reports a job that did not succeed.
	failed func() error
	// explain runs EXPLAIN (ANALYZE, BUFFERS) of the claim on the current
	// table.
	explain func(ctx context.Context) (Explain, error)
	// stop stops working and closes the pool.
	stop func() error
}

// openPool opens a pool of size (0: pgxpool's default) and opens all its
// connections, so that no timed run pays for connecting.
func openPool(ctx context.Context, url string, size int, configure func(*pgxpool.Config)) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	if size > 0 {
		cfg.MaxConns = int32(size)
	}
	if configure != nil {
		configure(cfg)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := warm(ctx, pool); err != nil {
		pool.Close()
		return nil, err
	}
	return pool, nil
}

func warm(ctx context.Context, pool *pgxpool.Pool) error {
	n := int(pool.Config().MaxConns)
	conns := make([]*pgxpool.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Release()
		}
	}()
	for range n {
		c, err := pool.Acquire(ctx)
		if err != nil {
			return fmt.Errorf("open the pool's connections: %w", err)
		}
		conns = append(conns, c)
	}
	return nil
}

// stallTimeout ends a run that finished no job for this long.
const stallTimeout = time.Minute

// workDown times r working until n jobs are done, with the database's
// cost meanwhile. The caller has inserted the jobs. With mid set, the
// claim is also explained once half the jobs are done, beside the running
// worker (one more claim among thousands, rolled back), into *mid.
func (h *harness) workDown(ctx context.Context, s side, r *runner, n int, mid *Explain) (Measure, error) {
	m := Measure{Jobs: n}
	began, err := h.meter.start(ctx)
	if err != nil {
		return m, err
	}
	var midDone chan error
	at := func(done int64) {
		if mid != nil && midDone == nil && done >= int64(n)/2 {
			midDone = make(chan error, 1)
			go func() {
				ex, err := r.explain(ctx)
				*mid = ex
				midDone <- err
			}()
		}
	}
	start := time.Now()
	if err := r.begin(); err != nil {
		return m, err
	}
	if err := waitDone(ctx, r, int64(n), at); err != nil {
		return m, fmt.Errorf("%s: %w", s.name(), err)
	}
	m.Elapsed = time.Since(start)
	if m.Cost, err = h.meter.stop(ctx, began, s.datname()); err != nil {
		return m, err
	}
	if midDone != nil {
		if err := <-midDone; err != nil {
			return m, fmt.Errorf("%s: explain half-way: %w", s.name(), err)
		}
	}
	return m, nil
}

// waitDone polls (in process, no SQL) until r has done n jobs, telling at
// (if set) every count it sees.
func waitDone(ctx context.Context, r *runner, n int64, at func(int64)) error {
	last, lastAt := int64(-1), time.Now()
	for {
		d := r.done()
		if at != nil {
			at(d)
		}
		if d >= n {
			return nil
		}
		if err := r.failed(); err != nil {
			return err
		}
		if d != last {
			last, lastAt = d, time.Now()
		} else if time.Since(lastAt) > stallTimeout {
			return fmt.Errorf("stalled: %d of %d jobs done, none for %s", d, n, stallTimeout)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		time.Sleep(time.Millisecond) // benchmark polling of an in-process counter
	}
}

// alongside times r working for d while an inserter keeps at least min
// jobs queued, inserting 5,000 at a time (as `river bench` without -n).
func (h *harness) alongside(ctx context.Context, s side, r *runner, d time.Duration, minQueued int) (Measure, error) {
	var m Measure
	const batch = 5_000
	inserted := 0
	fill := func() error {
		for inserted-int(r.done()) < minQueued {
			if err := r.insert(ctx, batch); err != nil {
				return err
			}
			inserted += batch
		}
		return nil
	}
	if err := fill(); err != nil {
		return m, err
	}
	if err := s.settle(ctx); err != nil {
		return m, err
	}
	ictx, stopInserts := context.WithCancel(ctx)
	var wg sync.WaitGroup
	halt := sync.OnceFunc(func() { stopInserts(); wg.Wait() })
	defer halt()
	var insertErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ictx.Done():
				return
			case <-t.C:
			}
			if err := fill(); err != nil {
				if ictx.Err() == nil {
					insertErr = err
				}
				return
			}
		}
	}()
	// The window opens once the first job is done, so that neither side's
	// start-up is in it.
	if err := r.begin(); err != nil {
		return m, err
	}
	if err := waitDone(ctx, r, 1, nil); err != nil {
		return m, fmt.Errorf("%s: %w", s.name(), err)
	}
	at, err := h.meter.start(ctx)
	if err != nil {
		return m, err
	}
	start := time.Now()
	d0 := r.done()
	timer := time.NewTimer(d)
	select {
	case <-ctx.Done():
	case <-timer.C:
	}
	m.Jobs = int(r.done() - d0)
	m.Elapsed = time.Since(start)
	halt()
	if insertErr != nil {
		return m, fmt.Errorf("%s: insert alongside: %w", s.name(), insertErr)
	}
	if err := r.failed(); err != nil {
		return m, fmt.Errorf("%s: %w", s.name(), err)
	}
	m.Cost, err = h.meter.stop(ctx, at, s.datname())
	return m, err
}
