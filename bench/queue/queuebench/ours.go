package queuebench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/galaxy/rtmanager/agent/worker"
	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/domain/job"
	"github.com/galaxy/rtmanager/internal/testutil/pgtrace"
)

const (
	benchHost  = "bench-host"
	probeHost  = "queuebench-probe-host"
	probeOwner = "queuebench-probe-owner"
)

// ours is rtmanager's queue: the agent's job worker with a no-op executor.
type ours struct {
	url, db     string
	pool        *pgxpool.Pool // the harness's own: inserts, resets, checks
	concurrency int
	prefetch    int
	poolSize    int
	log         *slog.Logger
	rounds      atomic.Int64
	games       atomic.Int64 // game ids handed out, so every insert gets new games
}

func (o *ours) name() string    { return "ours" }
func (o *ours) datname() string { return o.db }

func (o *ours) reset(ctx context.Context) error {
	if _, err := o.pool.Exec(ctx, "TRUNCATE jobs, outbox RESTART IDENTITY"); err != nil {
		return fmt.Errorf("ours: truncate: %w", err)
	}
	for _, t := range []string{"jobs", "outbox"} {
		if _, err := o.pool.Exec(ctx, "VACUUM FULL "+t); err != nil {
			return fmt.Errorf("ours: vacuum %s: %w", t, err)
		}
	}
	return nil
}

// insertGames inserts n no-op jobs (kind stop, empty payload), the i-th
// of game prefix || (i % games), in one INSERT as the Game Master could.
func (o *ours) insertGames(ctx context.Context, n int, prefix string, games int) error {
	_, err := o.pool.Exec(ctx, `
INSERT INTO jobs (host_id, game_id, kind)
SELECT $1, $2 || (i % $3), 'stop' FROM generate_series(0, $4 - 1) AS i`, benchHost, prefix, games, n)
	if err != nil {
		return fmt.Errorf("ours: insert %d jobs: %w", n, err)
	}
	return nil
}

// insertDistinct inserts n jobs, each of a new game.
func (o *ours) insertDistinct(ctx context.Context, n int) error {
	first := o.games.Add(int64(n)) - int64(n)
	_, err := o.pool.Exec(ctx, `
INSERT INTO jobs (host_id, game_id, kind)
SELECT $1, 'g' || i, 'stop' FROM generate_series($2::bigint, $2::bigint + $3 - 1) AS i`, benchHost, first, n)
	if err != nil {
		return fmt.Errorf("ours: insert %d jobs: %w", n, err)
	}
	return nil
}

func (o *ours) addFinished(ctx context.Context, n int) error {
	_, err := o.pool.Exec(ctx, `
INSERT INTO jobs (host_id, game_id, kind, status, attempt, created_at, started_at, finished_at)
SELECT $1, 'done' || i, 'stop', 'succeeded', 1, now(), now(), now() FROM generate_series(1, $2) AS i`, benchHost, n)
	if err != nil {
		return fmt.Errorf("ours: insert %d finished jobs: %w", n, err)
	}
	return nil
}

func (o *ours) settle(ctx context.Context) error {
	_, err := o.pool.Exec(ctx, "VACUUM ANALYZE jobs")
	return err
}

func (o *ours) verify(ctx context.Context, n int) error {
	var open, events int
	if err := o.pool.QueryRow(ctx, `SELECT count(*) FROM jobs WHERE status NOT IN ('succeeded')`).Scan(&open); err != nil {
		return err
	}
	if err := o.pool.QueryRow(ctx, `SELECT count(*) FROM outbox WHERE type = 'job.succeeded'`).Scan(&events); err != nil {
		return err
	}
	if open != 0 || events != n {
		return fmt.Errorf("ours: %d jobs not succeeded, %d outcome events for %d jobs", open, events, n)
	}
	return nil
}

// poolSizeFor is the agent's pool size (agent/app) unless one is forced.
func (o *ours) poolSizeFor() int {
	if o.poolSize > 0 {
		return o.poolSize
	}
	return max(o.concurrency+6, 10)
}

func (o *ours) prepare(ctx context.Context) (*runner, error) {
	return o.prepareWith(ctx, worker.Noop)
}

// prepareWith builds the worker as the agent does (agent/app), with exec
// in place of Docker.
func (o *ours) prepareWith(ctx context.Context, exec worker.Executor) (*runner, error) {
	pool, err := openPool(ctx, o.url, o.poolSizeFor(), nil)
	if err != nil {
		return nil, fmt.Errorf("ours: %w", err)
	}
	store := db.NewStore(pool, nil)
	p := job.DefaultPolicy()
	p.StateRoot = "/srv/state"
	lease := 30 * time.Second
	w := worker.New(store, exec, worker.Config{
		HostID: benchHost, Owner: fmt.Sprintf("queuebench-%d", o.rounds.Add(1)),
		Concurrency: o.concurrency, Prefetch: o.prefetch, LeaseDuration: lease, PollInterval: time.Second, UseListen: true,
		Policy: p, Logger: o.log, RescueInterval: max(2*time.Minute, lease),
	})
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	exited := make(chan error, 1)
	started := false
	return &runner{
		insert: o.insertDistinct,
		begin: func() error {
			started = true
			go func() { exited <- w.Run(wctx) }()
			return nil
		},
		done: func() int64 { return w.Stats().Succeeded },
		failed: func() error {
			s := w.Stats()
			if s.Failed+s.Cancelled+s.Retried+s.LeaseLost > 0 {
				return fmt.Errorf("ours: %d failed, %d cancelled, %d retried, %d leases lost", s.Failed, s.Cancelled, s.Retried, s.LeaseLost)
			}
			select {
			case err := <-exited:
				exited <- err
				return fmt.Errorf("ours: the worker stopped: %v", err)
			default:
				return nil
			}
		},
		explain: func(ctx context.Context) (Explain, error) {
			return o.explainClaim(ctx)
		},
		stop: func() error {
			cancel()
			var err error
			if started {
				err = <-exited
			}
			pool.Close()
			return err
		},
	}, nil
}

// explainClaim explains the claim as the store sends it: a probe call of
// db.Store.ClaimJobs for a host without jobs records the statements and
// their arguments; they are explained with the bench host in its place.
func (o *ours) explainClaim(ctx context.Context) (Explain, error) {
	cp := &pgtrace.Recorder{}
	pool, err := db.Connect(ctx, o.url, func(c *pgxpool.Config) { c.MaxConns = 1; c.ConnConfig.Tracer = cp })
	if err != nil {
		return Explain{}, err
	}
	defer pool.Close()
	store := db.NewStore(pool, nil)
	stmts, err := cp.Record(func() error {
		got, err := store.ClaimJobs(ctx, probeHost, probeOwner, o.concurrency+o.prefetch, 30*time.Second)
		if err == nil && len(got) > 0 {
			err = errors.New("the probe host has jobs")
		}
		return err
	})
	if err != nil {
		return Explain{}, fmt.Errorf("ours: probe claim: %w", err)
	}
	conn, err := connectExplain(ctx, o.pool)
	if err != nil {
		return Explain{}, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return explain(ctx, conn, fmt.Sprintf("ours: db.Store.ClaimJobs(host, owner, %d, 30s)", o.concurrency+o.prefetch), stmts, map[string]string{probeHost: benchHost})
}
