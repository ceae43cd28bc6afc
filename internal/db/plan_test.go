package db_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/domain/job"
	"github.com/galaxy/rtmanager/internal/testutil/pgtest"
	"github.com/galaxy/rtmanager/internal/testutil/pgtrace"
)

// TestBatchStatementsKeepTheirIndexesOnStaleStatistics: the claim and the
// batch finish are planned through indexes even when the statistics were
// taken while every job was queued (no running job, no lease owner), on a
// table small enough that reading it whole looks cheap: the shape of a hot
// game's line beside 100 other games. A finish that joined its input to the
// jobs was planned here as a scan of the whole table, each row matched
// against every input row, and cost the other games a quarter of their
// throughput behind the hot game.
func TestBatchStatementsKeepTheirIndexesOnStaleStatistics(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig(pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	var rec pgtrace.Recorder
	cfg.ConnConfig.Tracer = &rec
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	s := db.NewStore(pool, nil)
	const host = "host-stale"
	for _, q := range []string{
		`INSERT INTO jobs (host_id, game_id, kind) SELECT 'host-stale', 'hot', 'stop' FROM generate_series(1, 10000)`,
		`INSERT INTO jobs (host_id, game_id, kind) SELECT 'host-stale', 'other-' || (i % 100), 'stop' FROM generate_series(0, 999) i`,
		`ANALYZE jobs`,
	} {
		if _, err := pool.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	stmts, err := rec.Record(func() error {
		claimed, err := s.ClaimJobs(ctx, host, "owner", 2000, time.Minute)
		if err != nil || len(claimed) != 101 {
			return fmt.Errorf("claim: %d jobs, %v (want the 101 heads)", len(claimed), err)
		}
		fs := make([]db.Finish, len(claimed))
		for i, j := range claimed {
			fs[i] = db.Finish{Job: j, Outcome: db.Outcome{Status: job.StatusSucceeded}}
		}
		if done, err := s.FinishJobs(ctx, "owner", fs); err != nil || len(done) != len(fs) {
			return fmt.Errorf("finish: %d of %d, %v", len(done), len(fs), err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	for _, name := range []string{"name: ClaimJobs", "name: FinishJobs"} {
		st, ok := pgtrace.Last(stmts, name)
		if !ok {
			t.Fatalf("no statement %q was sent", name)
		}
		rows, err := pool.Query(ctx, "EXPLAIN "+st.SQL, st.Args...)
		if err != nil {
			t.Fatalf("explain %s: %v", name, err)
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		plan := strings.Join(lines, "\n")
		if strings.Contains(plan, "Seq Scan on jobs") {
			t.Errorf("%s reads the jobs table whole:\n%s", name, plan)
		}
	}
}
