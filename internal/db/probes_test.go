package db_test

import (
	"context"
	"errors"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/galaxy/rtmanager/internal/testutil/pgtest"
)

// TestHeadProbesReadNoHistory runs the head marker's probes under the
// statistics of a table that was one game's queue when they were taken,
// with the game's finished jobs behind it by now, and reads their plans
// (auto_explain, sent to the client): an insert behind the game's queued
// jobs (the insert trigger's second look, under the game's lock) and a
// finish of its head (the promotion's waiting probe) must each read a few
// pages (3 here), not the game's history. Their generic plans did before
// migration 000017: an index on the game alone, from its first job on
// (10 to 38 pages here; 1,026 for one insert behind 2,140 finished jobs
// in BenchmarkHotGameChain). plpgsql plans a statement for its arguments
// five times before it tries the generic plan, so each runs ten times.
func TestHeadProbesReadNoHistory(t *testing.T) {
	t.Parallel()
	for _, shape := range []struct {
		name            string
		queued, analyze int // jobs queued, and of those when ANALYZE ran
	}{
		{"a small table", 2100, 100},
		{"a long queue", 10000, 10000},
	} {
		t.Run(shape.name, func(t *testing.T) {
			t.Parallel()
			headProbes(t, shape.queued, shape.analyze)
		})
	}
}

func headProbes(t *testing.T, queued, analyze int) {
	ctx := context.Background()
	cfg, err := pgx.ParseConfig(pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var plans []string
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		mu.Lock()
		plans = append(plans, n.Message)
		mu.Unlock()
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	exec := func(q string) {
		t.Helper()
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	insert := func(n int) {
		exec(`INSERT INTO jobs (host_id, game_id, kind) SELECT 'host-a', 'hot', 'stop' FROM generate_series(1, ` + strconv.Itoa(n) + `)`)
	}
	insert(analyze)
	exec(`ANALYZE jobs`)
	insert(queued - analyze)
	// The game's history: the first 2,000 finished, in one statement.
	exec(`UPDATE jobs SET status = 'succeeded', finished_at = now() WHERE id <= (SELECT min(id) + 1999 FROM jobs)`)
	if _, err := conn.Exec(ctx, `LOAD 'auto_explain'`); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42501" && os.Getenv(pgtest.EnvDatabaseURL) != "" {
			t.Skipf("the server given by %s does not let this user load auto_explain: %v", pgtest.EnvDatabaseURL, err)
		}
		t.Fatalf("load auto_explain: %v", err)
	}
	for _, s := range []string{"log_min_duration = 0", "log_nested_statements = on", "log_analyze = on", "log_buffers = on"} {
		exec("SET auto_explain." + s)
	}
	exec(`SET client_min_messages = log`)
	for range 10 {
		exec(`INSERT INTO jobs (host_id, game_id, kind) VALUES ('host-a', 'hot', 'stop')`)
		exec(`UPDATE jobs SET status = 'succeeded', finished_at = now()
WHERE id = (SELECT id FROM jobs WHERE game_id = 'hot' AND status = 'queued' AND is_head ORDER BY id LIMIT 1)`)
	}
	exec(`SET client_min_messages = notice`)

	hits := regexp.MustCompile(`Buffers: shared hit=(\d+)`)
	mu.Lock()
	defer mu.Unlock()
	for _, probe := range []struct{ name, text string }{
		{"the insert's second look", "NEW.is_head := NOT EXISTS"},
		{"the promotion's waiting probe", "SELECT array_agg(e.game_id), array_agg(e.id)"},
	} {
		seen := 0
		for _, p := range plans {
			if !strings.Contains(p, probe.text) {
				continue
			}
			seen++
			m := hits.FindStringSubmatch(p)
			if m == nil {
				continue // read nothing
			}
			if n, _ := strconv.Atoi(m[1]); n > 8 {
				t.Errorf("%s read %d pages:\n%s", probe.name, n, p)
			}
		}
		if seen < 10 {
			t.Errorf("%s: %d plans seen, want 10", probe.name, seen)
		}
	}
}
