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
	const host = "host-stale"
	pool, s, rec := hotLine(t, host, host)
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

// TestClaimGuardReadsOnlyWhatLiesBeforeTheHead: the claim's guard (no
// earlier unfinished job of the candidate's game) reads the game's index
// backwards from the candidate, so what it reads does not depend on what
// is queued behind. Written as "game_id = AND (game_id, id) <",
// PostgreSQL 15 read forwards through the game's whole line (a row
// comparison whose id decides does not end a scan): behind a hot game's
// 10,000 queued jobs, every claim of its head read about 40 index pages
// for its guard, and 20,000 more behind it made that about 180.
func TestClaimGuardReadsOnlyWhatLiesBeforeTheHead(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// The other games are another host's: the claim takes the head alone.
	const host = "host-guard"
	pool, s, rec := hotLine(t, host, "host-other")
	// Work down one of the line's jobs, so that the head has an ended job
	// before it.
	stmts, err := rec.Record(func() error {
		claimed, err := s.ClaimJobs(ctx, host, "owner", 2000, time.Minute)
		if err != nil || len(claimed) != 1 {
			return fmt.Errorf("claim: %d jobs, %v (want the head)", len(claimed), err)
		}
		done, err := s.FinishJobs(ctx, "owner", []db.Finish{{Job: claimed[0], Outcome: db.Outcome{Status: job.StatusSucceeded}}})
		if err != nil || len(done) != 1 {
			return fmt.Errorf("finish: %d, %v", len(done), err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	claim, ok := pgtrace.Last(stmts, "name: ClaimJobs")
	if !ok {
		t.Fatal("no claim was sent")
	}

	// The guard's index scan in a claim of the head, rolled back.
	guard := func() (direction string, pages float64) {
		t.Helper()
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tx.Rollback(ctx) }()
		var plan []map[string]any
		if err := tx.QueryRow(ctx, "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) "+claim.SQL, claim.Args...).Scan(&plan); err != nil {
			t.Fatalf("explain the claim: %v", err)
		}
		var guards []map[string]any
		var nodes []string
		var walk func(n map[string]any)
		walk = func(n map[string]any) {
			nodes = append(nodes, fmt.Sprint(n["Node Type"], " ", n["Index Name"], n["Relation Name"]))
			if n["Index Name"] == "jobs_game_unfinished_idx" && n["Actual Loops"].(float64) > 0 {
				guards = append(guards, n)
			}
			kids, _ := n["Plans"].([]any)
			for _, k := range kids {
				walk(k.(map[string]any))
			}
		}
		walk(plan[0]["Plan"].(map[string]any))
		if len(guards) != 1 {
			t.Fatalf("want the guard's one index scan of jobs_game_unfinished_idx that ran, found %d in: %s", len(guards), strings.Join(nodes, "; "))
		}
		g := guards[0]
		return fmt.Sprint(g["Scan Direction"]), g["Shared Hit Blocks"].(float64) + g["Shared Read Blocks"].(float64)
	}
	dir, before := guard()
	if _, err := pool.Exec(ctx, `INSERT INTO jobs (host_id, game_id, kind) SELECT $1, 'hot', 'stop' FROM generate_series(1, 20000)`, host); err != nil {
		t.Fatal(err)
	}
	dirMore, after := guard()
	t.Logf("the guard's index scan: %s, %v pages; behind 20,000 more: %s, %v pages", dir, before, dirMore, after)
	// Pages, not time: how many the scan touched, whatever the machine.
	// The index may grow a level (one more page on the way down); dead
	// row versions that other tests' snapshots still hold add heap
	// visits, the same in both.
	if dir != "Backward" || dirMore != "Backward" || after-before > 3 {
		t.Errorf("the guard for the hot game's head reads %v pages (%s) behind 9,999 queued jobs and %v (%s) behind 29,999; want a backward scan that reads no more behind a longer line", before, dir, after, dirMore)
	}
}

// hotLine makes a database whose statements rec records, holding host's
// hot game of 10,000 queued jobs and otherHost's 1,000 jobs over 100
// other games, with statistics taken then: a hot game's line, on a table
// small enough that reading it whole looks cheap.
func hotLine(t *testing.T, host, otherHost string) (*pgxpool.Pool, *db.Store, *pgtrace.Recorder) {
	t.Helper()
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig(pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	rec := &pgtrace.Recorder{}
	cfg.ConnConfig.Tracer = rec
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO jobs (host_id, game_id, kind) SELECT $1, 'hot', 'stop' FROM generate_series(1, 10000)`, []any{host}},
		{`INSERT INTO jobs (host_id, game_id, kind) SELECT $1, 'other-' || (i % 100), 'stop' FROM generate_series(0, 999) i`, []any{otherHost}},
		{`ANALYZE jobs`, nil},
	} {
		if _, err := pool.Exec(ctx, q.sql, q.args...); err != nil {
			t.Fatal(err)
		}
	}
	return pool, db.NewStore(pool, nil), rec
}
