package queuebench

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// rawBaselines measures, on our database over a pool like ours: one-row
// commits, and the smallest queue loop (claim Concurrency rows with FOR
// UPDATE SKIP LOCKED in id order, mark them done with one UPDATE) without
// per-game order, leases, locks or outbox. They are the same baselines as
// agent/worker's BenchmarkQueueNoop raw/ sub-benchmarks.
func (h *harness) rawBaselines(ctx context.Context) (Raw, error) {
	var raw Raw
	o := h.ours
	pool, err := openPool(ctx, o.url, o.poolSizeFor(), nil)
	if err != nil {
		return raw, err
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS bench_raw (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text);
TRUNCATE bench_raw`); err != nil {
		return raw, err
	}
	start := time.Now()
	for range h.opts.RawCommits {
		tx, err := pool.Begin(ctx)
		if err != nil {
			return raw, err
		}
		if _, err := tx.Exec(ctx, "INSERT INTO bench_raw (v) VALUES ($1)", "x"); err != nil {
			_ = tx.Rollback(ctx)
			return raw, err
		}
		if err := tx.Commit(ctx); err != nil {
			return raw, err
		}
	}
	raw.CommitsPerSec = float64(h.opts.RawCommits) / time.Since(start).Seconds()

	if err := o.reset(ctx); err != nil {
		return raw, err
	}
	n := h.opts.RawClaimJobs
	if err := o.insertDistinct(ctx, n); err != nil {
		return raw, err
	}
	if err := o.settle(ctx); err != nil {
		return raw, err
	}
	start = time.Now()
	for done := 0; done < n; {
		rows, err := pool.Query(ctx, `
WITH c AS (
    SELECT id FROM jobs WHERE host_id = $1 AND status = 'queued'
    ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED
)
UPDATE jobs SET status = 'running', attempt = jobs.attempt + 1, lease_owner = 'raw',
    lease_expires_at = now() + interval '1 minute', started_at = now()
FROM c WHERE jobs.id = c.id RETURNING jobs.id`, benchHost, o.concurrency)
		if err != nil {
			return raw, err
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return raw, err
		}
		if len(ids) == 0 {
			return raw, fmt.Errorf("raw claim: nothing to claim after %d of %d", done, n)
		}
		if _, err := pool.Exec(ctx, `UPDATE jobs SET status = 'succeeded', finished_at = now(), lease_owner = NULL, lease_expires_at = NULL WHERE id = ANY($1)`, ids); err != nil {
			return raw, err
		}
		done += len(ids)
	}
	raw.ClaimUpdatePerSec = float64(n) / time.Since(start).Seconds()
	return raw, nil
}
