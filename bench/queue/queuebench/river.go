package queuebench

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/galaxy/rtmanager/internal/testutil/pgtrace"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
)

// riverSide is River as `river bench` runs it (cmd/river/riverbench):
// the same client settings, InsertMany in batches of 5,000, a no-op
// worker, completions counted from the client's event subscription.
type riverSide struct {
	url, db  string
	pool     *pgxpool.Pool // the harness's own
	poolSize int           // 0: pgxpool's default, as `river bench` opens it
	cfg      river.Config
	log      *slog.Logger
}

// benchArgs and noopWorker are `river bench`'s job: it does nothing.
type benchArgs struct {
	Num int `json:"num"`
}

func (benchArgs) Kind() string { return "benchmark" }

type noopWorker struct {
	river.WorkerDefaults[benchArgs]
}

func (*noopWorker) Work(context.Context, *river.Job[benchArgs]) error { return nil }

func migrateRiver(ctx context.Context, pool *pgxpool.Pool) error {
	m, err := rivermigrate.New(riverpgxv5.New(pool), nil)
	if err != nil {
		return err
	}
	_, err = m.Migrate(ctx, rivermigrate.DirectionUp, nil)
	return err
}

func (r *riverSide) name() string    { return "River" }
func (r *riverSide) datname() string { return r.db }

// reset is `river bench`'s: TRUNCATE and VACUUM FULL river_job.
func (r *riverSide) reset(ctx context.Context) error {
	for _, q := range []string{"TRUNCATE river_job", "VACUUM FULL river_job"} {
		if _, err := r.pool.Exec(ctx, q); err != nil {
			return fmt.Errorf("river: %s: %w", q, err)
		}
	}
	return nil
}

func (r *riverSide) addFinished(ctx context.Context, n int) error {
	_, err := r.pool.Exec(ctx, `
INSERT INTO river_job (state, attempt, max_attempts, attempted_at, finalized_at, args, kind, attempted_by)
SELECT 'completed', 1, 25, now(), now(), jsonb_build_object('num', i), 'benchmark', ARRAY['queuebench']
FROM generate_series(1, $1) AS i`, n)
	if err != nil {
		return fmt.Errorf("river: insert %d completed jobs: %w", n, err)
	}
	return nil
}

func (r *riverSide) settle(ctx context.Context) error {
	_, err := r.pool.Exec(ctx, "VACUUM ANALYZE river_job")
	return err
}

func (r *riverSide) verify(ctx context.Context, n int) error {
	var open, done int
	err := r.pool.QueryRow(ctx, `
SELECT count(*) FILTER (WHERE state <> 'completed'),
       count(*) FILTER (WHERE state = 'completed' AND NOT attempted_by @> ARRAY['queuebench'])
FROM river_job`).Scan(&open, &done)
	if err != nil {
		return err
	}
	if open != 0 || done != n {
		return fmt.Errorf("river: %d jobs not completed, %d completed of %d", open, done, n)
	}
	return nil
}

func (r *riverSide) prepare(ctx context.Context) (*runner, error) {
	pool, err := openPool(ctx, r.url, r.poolSize, nil)
	if err != nil {
		return nil, fmt.Errorf("river: %w", err)
	}
	workers := river.NewWorkers()
	river.AddWorker(workers, &noopWorker{})
	cfg := r.cfg
	cfg.Workers = workers
	cfg.Logger = r.log
	client, err := river.NewClient(riverpgxv5.New(pool), &cfg)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("river: new client: %w", err)
	}
	events, unsubscribe := client.SubscribeConfig(&river.SubscribeConfig{
		// Large enough that no event is dropped: they are the count.
		ChanSize: 100_000,
		Kinds:    []river.EventKind{river.EventKindJobCompleted, river.EventKindJobFailed, river.EventKindJobCancelled},
	})
	var done, bad atomic.Int64
	go func() {
		for ev := range events {
			if ev.Kind == river.EventKindJobCompleted {
				done.Add(1)
			} else {
				bad.Add(1)
			}
		}
	}()
	num := 0
	started := false
	return &runner{
		insert: func(ctx context.Context, n int) error {
			const batch = 5_000
			params := make([]river.InsertManyParams, 0, batch)
			for left := n; left > 0; left -= len(params) {
				params = params[:0]
				for range min(batch, left) {
					num++
					params = append(params, river.InsertManyParams{Args: benchArgs{Num: num}})
				}
				if _, err := client.InsertMany(ctx, params); err != nil {
					return fmt.Errorf("river: insert: %w", err)
				}
			}
			return nil
		},
		begin: func() error {
			started = true
			return client.Start(context.WithoutCancel(ctx))
		},
		done: done.Load,
		failed: func() error {
			if n := bad.Load(); n > 0 {
				return fmt.Errorf("river: %d jobs failed or were cancelled", n)
			}
			return nil
		},
		explain: func(ctx context.Context) (Explain, error) {
			return r.explainFetch(ctx)
		},
		stop: func() error {
			var err error
			if started {
				err = client.Stop(context.WithoutCancel(ctx))
			}
			unsubscribe()
			pool.Close()
			return err
		},
	}, nil
}

// explainFetch explains River's fetch as its driver sends it: a probe
// JobGetAvailable on an empty queue records the statement, which is
// explained for the default queue and MaxWorkers jobs (a producer's first
// fetch).
func (r *riverSide) explainFetch(ctx context.Context) (Explain, error) {
	const probeQueue = "queuebench-probe-queue"
	cp := &pgtrace.Recorder{}
	cfg, err := pgxpool.ParseConfig(r.url)
	if err != nil {
		return Explain{}, err
	}
	cfg.MaxConns = 1
	cfg.ConnConfig.Tracer = cp
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return Explain{}, err
	}
	defer pool.Close()
	exec := riverpgxv5.New(pool).GetExecutor()
	stmts, err := cp.Record(func() error {
		_, err := exec.JobGetAvailable(ctx, &riverdriver.JobGetAvailableParams{
			ClientID: "queuebench-probe", MaxAttemptedBy: 100, MaxToLock: r.cfg.Queues[river.QueueDefault].MaxWorkers,
			Queue: probeQueue,
		})
		return err
	})
	if err != nil {
		return Explain{}, fmt.Errorf("river: probe fetch: %w", err)
	}
	conn, err := connectExplain(ctx, r.pool)
	if err != nil {
		return Explain{}, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return explain(ctx, conn, fmt.Sprintf("River: JobGetAvailable(default queue, %d)", r.cfg.Queues[river.QueueDefault].MaxWorkers),
		stmts, map[string]string{probeQueue: river.QueueDefault})
}
