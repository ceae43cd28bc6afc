package db_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/domain/job"
	"github.com/galaxy/rtmanager/internal/testutil/pgtest"
)

// statementLog records the statements a pool sends, with their arguments,
// so that a test can EXPLAIN exactly what the store ran.
type statementLog struct {
	mu    sync.Mutex
	stmts []loggedStatement
}

type loggedStatement struct {
	sql  string
	args []any
}

func (l *statementLog) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stmts = append(l.stmts, loggedStatement{sql: d.SQL, args: append([]any(nil), d.Args...)})
	return ctx
}

func (l *statementLog) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// last returns the last statement whose text contains marker.
func (l *statementLog) last(t *testing.T, marker string) loggedStatement {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := len(l.stmts) - 1; i >= 0; i-- {
		if strings.Contains(l.stmts[i].sql, marker) {
			return l.stmts[i]
		}
	}
	t.Fatalf("no statement %q was sent", marker)
	return loggedStatement{}
}

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
	var log statementLog
	cfg.ConnConfig.Tracer = &log
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
	claimed, err := s.ClaimJobs(ctx, host, "owner", 2000, time.Minute)
	if err != nil || len(claimed) != 101 {
		t.Fatalf("claim: %d jobs, %v (want the 101 heads)", len(claimed), err)
	}
	fs := make([]db.Finish, len(claimed))
	for i, j := range claimed {
		fs[i] = db.Finish{Job: j, Outcome: db.Outcome{Status: job.StatusSucceeded}}
	}
	if done, err := s.FinishJobs(ctx, "owner", fs); err != nil || len(done) != len(fs) {
		t.Fatalf("finish: %d of %d, %v", len(done), len(fs), err)
	}

	for _, name := range []string{"name: ClaimJobs", "name: FinishJobs"} {
		st := log.last(t, name)
		rows, err := pool.Query(ctx, "EXPLAIN "+st.sql, st.args...)
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
