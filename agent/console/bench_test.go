package console_test

import (
	"context"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/galaxy/rtmanager/agent/console"
	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/db/dbsqlc"
	"github.com/galaxy/rtmanager/internal/testutil/pgtest"
)

const (
	benchRecords = 100_000
	benchEvents  = 1_000_000 // 10 per game
	benchJobs    = 200_000   // 2 per game
)

// seedBench makes a database with 100,000 records over 20 hosts, 200,000
// jobs and 1,000,000 events, seeded with generate_series.
func seedBench(b *testing.B) *pgxpool.Pool {
	b.Helper()
	p := func() *pgxpool.Pool {
		url := pgtest.URL(b)
		p, err := db.Connect(context.Background(), url, console.ConfigurePool)
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		for _, sql := range []string{
			`INSERT INTO hosts (host_id, agent_id, lease_expires_at)
			 SELECT 'host-' || h, 'agent-' || h, now() + interval '1 minute' FROM generate_series(0, 19) h`,
			`INSERT INTO runtime_records (game_id, host_id, status, current_container_id, current_image_ref,
				engine_endpoint, state_path, docker_network, started_at, stopped_at, removed_at, last_op_at, created_at)
			 SELECT 'g' || lpad(i::text, 6, '0'), 'host-' || (i % 20),
				(ARRAY['running', 'running', 'running', 'stopped', 'removed'])[i % 5 + 1],
				CASE WHEN i % 5 = 4 THEN NULL ELSE md5(i::text) END, 'engine:1', 'http://galaxy-game-g' || i || ':8080',
				'/var/lib/rtmanager/state/g' || i, 'galaxy', now() - interval '1 day',
				CASE WHEN i % 5 = 3 THEN now() ELSE NULL END, CASE WHEN i % 5 = 4 THEN now() ELSE NULL END,
				now(), now() - interval '1 day'
			 FROM generate_series(0, $1::int - 1) i`,
			`INSERT INTO jobs (host_id, game_id, kind, payload, status, attempt, created_at, started_at, finished_at, last_error)
			 SELECT 'host-' || (i / 2 % 20), 'g' || lpad((i / 2)::text, 6, '0'), (ARRAY['start', 'stop'])[i % 2 + 1],
				'{"image_ref": "engine:1"}', CASE WHEN i % 97 = 0 THEN 'failed' ELSE 'succeeded' END, 1,
				now() - interval '2 hours' + i * interval '10 ms', now() - interval '2 hours' + i * interval '10 ms',
				now() - interval '2 hours' + i * interval '10 ms' + interval '1 second',
				CASE WHEN i % 97 = 0 THEN 'create container: no space left on device' END
			 FROM generate_series(0, $1::int - 1) i`,
			`INSERT INTO outbox (type, host_id, game_id, job_id, payload, created_at)
			 SELECT (ARRAY['runtime.running', 'job.succeeded', 'runtime.stopped', 'job.succeeded', 'runtime.running'])[i % 5 + 1],
				'host-' || (i / 10 % 20), 'g' || lpad((i / 10)::text, 6, '0'), NULL,
				'{"to_status": "running", "reason": "job_start", "exit_code": 0}', now() - interval '3 hours' + i * interval '10 ms'
			 FROM generate_series(0, $1::int - 1) i`,
			`VACUUM ANALYZE`, // as autovacuum leaves a table in production
		} {
			var args []any
			switch {
			case contains(sql, "runtime_records ("):
				args = []any{benchRecords}
			case contains(sql, "INSERT INTO jobs"):
				args = []any{benchJobs}
			case contains(sql, "INSERT INTO outbox"):
				args = []any{benchEvents}
			}
			if _, err := p.Exec(ctx, sql, args...); err != nil {
				b.Fatalf("seed: %v\n%s", err, sql)
			}
		}
		b.Cleanup(p.Close)
		return p
	}()
	return p
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// benchPage renders path through the console's handler.
func benchPage(b *testing.B, h http.Handler, path string) {
	b.Helper()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	for b.Loop() {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			b.Fatalf("GET %s: %d\n%s", path, w.Code, w.Body.String())
		}
	}
}

func benchHandler(b *testing.B, p *pgxpool.Pool) http.Handler {
	s, err := console.New(console.Options{Pool: p, DownAfter: time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	return s.Handler()
}

func strp(s string) *string { return &s }

// BenchmarkPages renders the console's pages on 100,000 records, 200,000
// jobs and 1,000,000 events, each next to the same SQL run raw (the
// baseline): the games list (first page, a deep keyset page, filtered,
// searched) and one game's page; the fleet and jobs pages for scale.
func BenchmarkPages(b *testing.B) {
	p := seedBench(b)
	h := benchHandler(b, p)
	b.Run("games", func(b *testing.B) { benchGames(b, p, h) })
	b.Run("game", func(b *testing.B) { benchGame(b, p, h) })
	b.Run("fleet/console", func(b *testing.B) { benchPage(b, h, "/") })
	b.Run("jobs-failed/console", func(b *testing.B) { benchPage(b, h, "/jobs?status=failed") })
	b.Run("jobs-of-game/console", func(b *testing.B) { benchPage(b, h, "/jobs?game=g054321") })
}

func benchGames(b *testing.B, p *pgxpool.Pool, h http.Handler) {
	q := dbsqlc.New(p)
	ctx := context.Background()
	for _, c := range []struct {
		name, path string
		params     dbsqlc.ConsoleListGamesParams
	}{
		{"first", "/games", dbsqlc.ConsoleListGamesParams{MaxRecords: 51}},
		{"deep", "/games?after=g090000", dbsqlc.ConsoleListGamesParams{AfterGameID: "g090000", MaxRecords: 51}},
		{"host+status", "/games?host=host-7&status=running&after=g050000",
			dbsqlc.ConsoleListGamesParams{HostID: strp("host-7"), Status: strp("running"), AfterGameID: "g050000", MaxRecords: 51}},
		{"status", "/games?status=stopped", dbsqlc.ConsoleListGamesParams{Status: strp("stopped"), MaxRecords: 51}},
		{"search", "/games?q=g0777", dbsqlc.ConsoleListGamesParams{Prefix: "g0777", MaxRecords: 51}},
	} {
		b.Run(c.name+"/console", func(b *testing.B) { benchPage(b, h, c.path) })
		b.Run(c.name+"/raw", func(b *testing.B) {
			for b.Loop() {
				if _, err := q.ConsoleListGames(ctx, c.params); err != nil {
					b.Fatal(err)
				}
				// The page also lists the hosts for its filter.
				if _, err := q.ListHosts(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// benchGame: one game's page (record, last exit, timeline of its events
// and jobs), rendered and raw.
func benchGame(b *testing.B, p *pgxpool.Pool, h http.Handler) {
	q := dbsqlc.New(p)
	ctx := context.Background()
	const game = "g054321"
	b.Run("console", func(b *testing.B) { benchPage(b, h, "/games/"+game) })
	b.Run("raw", func(b *testing.B) {
		for b.Loop() {
			if _, err := q.GetRecord(ctx, game); err != nil {
				b.Fatal(err)
			}
			if _, err := q.ConsoleGameEvents(ctx, dbsqlc.ConsoleGameEventsParams{GameID: game, BeforeXid: math.MaxUint64, BeforeID: math.MaxInt64, MaxEvents: 100}); err != nil {
				b.Fatal(err)
			}
			if _, err := q.ConsoleGameJobs(ctx, dbsqlc.ConsoleGameJobsParams{GameID: game, BeforeID: math.MaxInt64, MaxJobs: 100}); err != nil {
				b.Fatal(err)
			}
			if _, err := q.ConsoleLastExit(ctx, game); err != nil {
				b.Fatal(err)
			}
			if _, err := q.ConsoleNow(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
}
