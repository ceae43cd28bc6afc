package worker_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/galaxy/rtmanager/agent/worker"
	"github.com/galaxy/rtmanager/internal/db"
)

// BenchmarkQueueNoop measures the queue's own overhead: b.N no-op jobs of
// 100 games, inserted up front, worked down by the worker(s). The figure
// to read is jobs/s (River: about 14,000 on 2 cores). finish=batch is the
// worker as it runs; finish=single finishes every job in a transaction of
// its own, as the worker did before the batch finisher, for comparison in
// the same run. The raw/ sub-benchmarks are the baselines of the same run
// on the same server: raw/commit is BEGIN, one INSERT, COMMIT on one
// connection, in commits/s; raw/claim+update is the smallest queue loop
// (claim up to 8 rows with FOR UPDATE SKIP LOCKED, mark them done with one
// UPDATE) without per-game order, leases, locks or outbox, in jobs/s.
func BenchmarkQueueNoop(b *testing.B) {
	b.Run("raw/commit", benchRawCommit)
	b.Run("raw/claim+update", benchRawClaimUpdate)
	for _, c := range []struct{ workers, concurrency int }{{1, 8}, {1, 32}, {4, 8}} {
		for _, batch := range []bool{true, false} {
			mode := "batch"
			if !batch {
				mode = "single"
			}
			b.Run(fmt.Sprintf("workers=%d/concurrency=%d/finish=%s", c.workers, c.concurrency, mode), func(b *testing.B) {
				benchQueue(b, c.workers, c.concurrency, batch)
			})
		}
	}
}

func benchQueue(b *testing.B, workers, concurrency int, batch bool) {
	s := newStore(b)
	if _, err := s.Pool().Exec(context.Background(),
		`INSERT INTO jobs (host_id, game_id, kind) SELECT $1, 'g' || (i % 100), 'stop' FROM generate_series(1, $2) i`,
		hostID, b.N); err != nil {
		b.Fatal(err)
	}
	var all []*worker.Worker
	b.ResetTimer()
	start := time.Now()
	for i := range workers {
		cfg := testConfig(fmt.Sprintf("owner-%d", i))
		cfg.Concurrency = concurrency
		cfg.LeaseDuration, cfg.LeaseRenewInterval = 30*time.Second, 10*time.Second
		cfg.Logger = quiet
		w := worker.New(s, worker.Noop, cfg)
		if !batch {
			worker.Unbatched(w)
		}
		all = append(all, w)
		startWorker(b, w)
	}
	for {
		var n int64
		for _, w := range all {
			n += w.Stats().Succeeded
		}
		if n >= int64(b.N) {
			break
		}
		time.Sleep(time.Millisecond) // benchmark polling, not test synchronisation
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "jobs/s")
}

// benchRawCommit: one INSERT in its own transaction, b.N times.
func benchRawCommit(b *testing.B) {
	pool := newStore(b).Pool()
	ctx := context.Background()
	if _, err := pool.Exec(ctx, "CREATE TABLE bench_raw (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text)"); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		tx, err := pool.Begin(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO bench_raw (v) VALUES ($1)", "x"); err != nil {
			b.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commits/s")
}

// benchRawClaimUpdate: b.N jobs worked down 8 at a time by one claim
// statement and one finishing UPDATE, with none of the worker's
// bookkeeping.
func benchRawClaimUpdate(b *testing.B) {
	pool := newStore(b).Pool()
	ctx := context.Background()
	if _, err := pool.Exec(ctx,
		`INSERT INTO jobs (host_id, game_id, kind) SELECT $1, 'g' || (i % 100), 'stop' FROM generate_series(1, $2) i`,
		hostID, b.N); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	done := 0
	for done < b.N {
		rows, err := pool.Query(ctx, `
			WITH c AS (
			    SELECT id FROM jobs WHERE host_id = $1 AND status = 'queued'
			    ORDER BY id LIMIT 8 FOR UPDATE SKIP LOCKED
			)
			UPDATE jobs SET status = 'running', attempt = jobs.attempt + 1, lease_owner = 'raw',
			    lease_expires_at = now() + interval '1 minute', started_at = now()
			FROM c WHERE jobs.id = c.id RETURNING jobs.id`, hostID)
		if err != nil {
			b.Fatal(err)
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			b.Fatal(err)
		}
		if len(ids) == 0 {
			b.Fatalf("nothing to claim after %d of %d", done, b.N)
		}
		if _, err := pool.Exec(ctx, `UPDATE jobs SET status = 'succeeded', finished_at = now(), lease_owner = NULL, lease_expires_at = NULL WHERE id = ANY($1)`, ids); err != nil {
			b.Fatal(err)
		}
		done += len(ids)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "jobs/s")
}

// BenchmarkPickupLatency measures insert → executor called on an idle
// worker woken by LISTEN/NOTIFY (polling set to an hour, so it cannot
// help).
func BenchmarkPickupLatency(b *testing.B) {
	s := newStore(b)
	called := make(chan struct{}, 1)
	exec := worker.ExecutorFunc(func(context.Context, worker.Task) (worker.Result, error) {
		called <- struct{}{}
		return worker.Result{}, nil
	})
	cfg := testConfig("owner-1")
	cfg.PollInterval = time.Hour
	cfg.Logger = quiet
	w := worker.New(s, exec, cfg)
	startWorker(b, w)
	for !w.Listening() {
		time.Sleep(time.Millisecond)
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		t0 := time.Now()
		insertQuiet(b, s, fmt.Sprintf("g%d", i))
		<-called
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50_ms")
	b.ReportMetric(float64(lat[min(len(lat)-1, len(lat)*99/100)].Microseconds())/1000, "p99_ms")
}

func insertQuiet(b *testing.B, s *db.Store, gameID string) {
	if _, err := s.Pool().Exec(context.Background(),
		`INSERT INTO jobs (host_id, game_id, kind) VALUES ($1, $2, 'stop')`, hostID, gameID); err != nil {
		b.Fatal(err)
	}
}
