package db_test

import (
	"context"
	"fmt"
	"io/fs"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/testutil/pgtest"
	"github.com/galaxy/rtmanager/internal/testutil/wait"
	"github.com/galaxy/rtmanager/migrations"
)

func TestMigrateUpDownUp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	u := pgtest.EmptyURL(t)

	if v, dirty, err := db.MigrationVersion(ctx, u); err != nil || v != 0 || dirty {
		t.Fatalf("fresh database: version %d dirty %v err %v", v, dirty, err)
	}
	if err := db.MigrateUp(ctx, u, db.MigrateOptions{}); err != nil {
		t.Fatal(err)
	}
	if v, dirty, err := db.MigrationVersion(ctx, u); err != nil || v != db.SchemaVersion || dirty {
		t.Fatalf("after up: version %d (want %d) dirty %v err %v", v, db.SchemaVersion, dirty, err)
	}
	if err := db.MigrateDown(ctx, u, migrationCount(t), db.MigrateOptions{}); err != nil {
		t.Fatal(err)
	}
	if n := countTables(t, u); n != 0 {
		t.Fatalf("after down, %d rtmanager tables remain", n)
	}
	if err := db.MigrateUp(ctx, u, db.MigrateOptions{}); err != nil {
		t.Fatalf("up after down: %v", err)
	}
	if n := countTables(t, u); n != 5 {
		t.Fatalf("after up, want 5 tables, got %d", n)
	}
}

// TestMigrateUpConcurrently starts several migrations at once, as a fleet
// of agents does: all succeed and the schema is applied once.
func TestMigrateUpConcurrently(t *testing.T) {
	t.Parallel()
	u := pgtest.EmptyURL(t)
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for i := 0; i < cap(errs); i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- db.MigrateUp(context.Background(), u, db.MigrateOptions{})
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent migrate up: %v", err)
		}
	}
	if v, dirty, err := db.MigrationVersion(context.Background(), u); err != nil || v != db.SchemaVersion || dirty {
		t.Fatalf("version %d dirty %v err %v", v, dirty, err)
	}
}

// TestMigrateWaitsForTheLock holds the migration lock the way a slow
// migration of another agent would: a migration with the default lock
// timeout waits and then succeeds; one with a short timeout says what to do.
func TestMigrateWaitsForTheLock(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	u := pgtest.EmptyURL(t)
	holder, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close(ctx)
	// The key agents use for migrations (db.migrateLockKey).
	if _, err := holder.Exec(ctx, "SELECT pg_advisory_lock(1920234, 0)"); err != nil {
		t.Fatal(err)
	}

	err = db.MigrateUp(ctx, u, db.MigrateOptions{LockTimeout: 200 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "migration lock") {
		t.Fatalf("short lock timeout: want an error about the migration lock, got %v", err)
	}

	result := make(chan error, 1)
	go func() { result <- db.MigrateUp(ctx, u, db.MigrateOptions{}) }()
	wait.For(t, time.Minute, "a migration waiting for the lock", func() bool {
		var waiting int
		_ = holder.QueryRow(ctx, "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database WHERE l.locktype = 'advisory' AND NOT l.granted AND d.datname = current_database()").Scan(&waiting)
		return waiting > 0
	})
	if _, err := holder.Exec(ctx, "SELECT pg_advisory_unlock_all()"); err != nil {
		t.Fatal(err)
	}
	if err := <-result; err != nil {
		t.Fatalf("migration after the lock was released: %v", err)
	}
}

func TestConnectErrorsSayWhatToFix(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	good := pgtest.EmptyURL(t)
	parsed, _ := url.Parse(good)
	missing := *parsed
	missing.Path = "/no_such_database"

	cases := []struct{ name, url, want string }{
		{"not a URL", "postgres://user:secret@host:notaport/db", "not valid"},
		{"nobody listens", "postgres://rtm:secret@127.0.0.1:1/rtm?sslmode=disable&connect_timeout=2", "cannot connect"},
		{"missing database", missing.String(), "does not exist"},
	}
	for _, tc := range cases {
		_, err := db.Connect(ctx, tc.url, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: want an error containing %q, got %v", tc.name, tc.want, err)
			continue
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: the error shows the password: %v", tc.name, err)
		}
		if err := db.MigrateUp(ctx, tc.url, db.MigrateOptions{}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: migrate: want an error containing %q, got %v", tc.name, tc.want, err)
		}
	}
}

// migrationCount is the number of up migrations: versions may have gaps,
// so it can be less than db.SchemaVersion.
func migrationCount(t *testing.T) int {
	t.Helper()
	ups, err := fs.Glob(migrations.FS, "*.up.sql")
	if err != nil || len(ups) == 0 {
		t.Fatalf("embedded migrations: %v %v", ups, err)
	}
	return len(ups)
}

// migrationsFrom counts the migrations numbered version or later: the steps
// down to the schema just before version.
func migrationsFrom(t *testing.T, version int) int {
	t.Helper()
	ups, err := fs.Glob(migrations.FS, "*.up.sql")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, name := range ups {
		v, err := strconv.Atoi(name[:strings.IndexByte(name, '_')])
		if err != nil {
			t.Fatalf("migration %s: %v", name, err)
		}
		if v >= version {
			n++
		}
	}
	return n
}

// justBefore migrates a new database up and then down to just before
// version, and returns its URL and a connection to it, closed at cleanup.
func justBefore(t *testing.T, version int) (string, *pgx.Conn) {
	t.Helper()
	ctx := context.Background()
	u := pgtest.EmptyURL(t)
	if err := db.MigrateUp(ctx, u, db.MigrateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := db.MigrateDown(ctx, u, migrationsFrom(t, version), db.MigrateOptions{}); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return u, conn
}

// byHand drives jobs with plain SQL in the migration tests of the head
// marker, as a writer other than the agent would.
type byHand struct {
	t    *testing.T
	conn *pgx.Conn
}

const (
	// runA starts game a's lowest queued job; finishA ends its running one.
	runA    = `UPDATE jobs SET status = 'running', lease_owner = 'o', lease_expires_at = now() + interval '1 minute' WHERE id = (SELECT min(id) FROM jobs WHERE game_id = 'a' AND status = 'queued')`
	finishA = `UPDATE jobs SET status = 'succeeded', finished_at = now(), lease_owner = NULL, lease_expires_at = NULL WHERE game_id = 'a' AND status = 'running'`
)

func (h byHand) exec(q string) {
	h.t.Helper()
	if _, err := h.conn.Exec(context.Background(), q); err != nil {
		h.t.Fatalf("%s: %v", q, err)
	}
}

// queuedHeads lists the queued heads as game:id, in id order.
func (h byHand) queuedHeads() string {
	h.t.Helper()
	var heads string
	if err := h.conn.QueryRow(context.Background(), `SELECT coalesce(string_agg(game_id || ':' || id, ' ' ORDER BY id), '') FROM jobs WHERE is_head AND status = 'queued'`).Scan(&heads); err != nil {
		h.t.Fatal(err)
	}
	return heads
}

func countTables(t *testing.T, u string) int {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), u)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	err = conn.QueryRow(context.Background(),
		`SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename IN ('hosts', 'runtime_records', 'jobs', 'outbox', 'outbox_consumers')`).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestMigration5KeepsTheMeaningOfAnInfiniteRunAfter: jobs written before
// run_after had to be finite become due at once (-infinity) or at the
// latest time PostgreSQL knows (infinity), and the migration applies.
func TestMigration5KeepsTheMeaningOfAnInfiniteRunAfter(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	u, conn := justBefore(t, 5)
	if _, err := conn.Exec(ctx, `INSERT INTO jobs (host_id, game_id, kind, run_after, created_at)
		VALUES ('h', 'past', 'stop', '-infinity', '2026-01-02 03:04:05+00'), ('h', 'never', 'stop', 'infinity', now())`); err != nil {
		t.Fatal(err)
	}
	if err := db.MigrateUp(ctx, u, db.MigrateOptions{}); err != nil {
		t.Fatal(err)
	}
	var past, never string
	if err := conn.QueryRow(ctx, `SELECT
		(SELECT run_after AT TIME ZONE 'UTC' FROM jobs WHERE game_id = 'past')::text,
		(SELECT run_after AT TIME ZONE 'UTC' FROM jobs WHERE game_id = 'never')::text`).Scan(&past, &never); err != nil {
		t.Fatal(err)
	}
	if past != "2026-01-02 03:04:05" || never != "294276-12-31 23:59:59.999999" {
		t.Fatalf("run_after after the migration: %q and %q", past, never)
	}
}

// TestMigration10MarksTheHeads: jobs queued before the head marker existed
// get it on the lowest unfinished job of each game, and a finish then
// promotes the next one.
func TestMigration10MarksTheHeads(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	u, conn := justBefore(t, 10)
	// Game a: a finished job, a running one, two queued; game b: two
	// queued; game c: only a finished one.
	if _, err := conn.Exec(ctx, `INSERT INTO jobs (host_id, game_id, kind, status, finished_at, lease_owner, lease_expires_at) VALUES
		('h', 'a', 'stop', 'succeeded', now(), NULL, NULL),
		('h', 'a', 'stop', 'running', NULL, 'o', now() + interval '1 minute'),
		('h', 'a', 'stop', 'queued', NULL, NULL, NULL),
		('h', 'b', 'stop', 'queued', NULL, NULL, NULL),
		('h', 'a', 'stop', 'queued', NULL, NULL, NULL),
		('h', 'b', 'stop', 'queued', NULL, NULL, NULL),
		('h', 'c', 'stop', 'failed', now(), NULL, NULL)`); err != nil {
		t.Fatal(err)
	}
	if err := db.MigrateUp(ctx, u, db.MigrateOptions{}); err != nil {
		t.Fatal(err)
	}
	heads := func() string {
		t.Helper()
		var s string
		if err := conn.QueryRow(ctx, `SELECT string_agg(game_id || ':' || status, ' ' ORDER BY id) FROM jobs WHERE is_head AND status IN ('queued', 'running')`).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	if got := heads(); got != "a:running b:queued" {
		t.Fatalf("heads after the migration: %q", got)
	}
	if _, err := conn.Exec(ctx, `UPDATE jobs SET status = 'succeeded', finished_at = now(), lease_owner = NULL, lease_expires_at = NULL WHERE game_id = 'a' AND status = 'running'`); err != nil {
		t.Fatal(err)
	}
	var next int64
	if err := conn.QueryRow(ctx, `SELECT id FROM jobs WHERE game_id = 'a' AND is_head AND status = 'queued'`).Scan(&next); err != nil {
		t.Fatalf("the finish promoted no job of game a: %v", err)
	}
	var lowest int64
	if err := conn.QueryRow(ctx, `SELECT min(id) FROM jobs WHERE game_id = 'a' AND status = 'queued'`).Scan(&lowest); err != nil || next != lowest {
		t.Fatalf("promoted %d, the next job is %d (%v)", next, lowest, err)
	}
}

// TestMigration13KeepsTheLinesGoing: the lock rows change from a row per
// game (job_lines) to the fixed buckets across jobs in every state, a game
// queued behind a running job is promoted after the migration, and the way
// back rebuilds a line for each game with unfinished jobs.
func TestMigration13KeepsTheLinesGoing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	u, conn := justBefore(t, 13)
	if _, err := conn.Exec(ctx, `INSERT INTO jobs (host_id, game_id, kind) VALUES ('h', 'a', 'stop'), ('h', 'a', 'stop'), ('h', 'b', 'stop')`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `UPDATE jobs SET status = 'running', lease_owner = 'o', lease_expires_at = now() + interval '1 minute' WHERE id = (SELECT min(id) FROM jobs WHERE game_id = 'a')`); err != nil {
		t.Fatal(err)
	}
	if err := db.MigrateUp(ctx, u, db.MigrateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Back to 13 (the way back from 14 makes the buckets again).
	if err := db.MigrateDown(ctx, u, migrationsFrom(t, 14), db.MigrateOptions{}); err != nil {
		t.Fatal(err)
	}
	var buckets int
	var linesLeft bool
	if err := conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM job_line_locks), to_regclass('job_lines') IS NOT NULL`).Scan(&buckets, &linesLeft); err != nil {
		t.Fatal(err)
	}
	if buckets != 65536 || linesLeft {
		t.Fatalf("after the migration: %d buckets, job_lines left: %v", buckets, linesLeft)
	}
	if _, err := conn.Exec(ctx, `UPDATE jobs SET status = 'succeeded', finished_at = now(), lease_owner = NULL, lease_expires_at = NULL WHERE game_id = 'a' AND status = 'running'`); err != nil {
		t.Fatal(err)
	}
	var heads string
	if err := conn.QueryRow(ctx, `SELECT string_agg(game_id, ' ' ORDER BY game_id) FROM jobs WHERE is_head AND status = 'queued'`).Scan(&heads); err != nil {
		t.Fatal(err)
	}
	if heads != "a b" {
		t.Fatalf("queued heads after a's finish: %q, want \"a b\"", heads)
	}
	if err := db.MigrateDown(ctx, u, 1, db.MigrateOptions{}); err != nil {
		t.Fatal(err)
	}
	var lines string
	if err := conn.QueryRow(ctx, `SELECT string_agg(game_id, ' ' ORDER BY game_id) FROM job_lines`).Scan(&lines); err != nil {
		t.Fatal(err)
	}
	if lines != "a b" {
		t.Fatalf("job_lines after the way back: %q", lines)
	}
}

// TestMigration14KeepsTheLinesGoing: the head marker's locks change from
// the bucket rows to advisory locks with a game queued behind a running
// job, which is promoted after the migration; an insert behind another
// transaction's job still says "not the head"; and the way back makes the
// buckets again, under which the lines keep going.
func TestMigration14KeepsTheLinesGoing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	u, conn := justBefore(t, 14)
	h := byHand{t, conn}
	h.exec(`INSERT INTO jobs (host_id, game_id, kind) VALUES ('h', 'a', 'stop'), ('h', 'a', 'stop'), ('h', 'b', 'stop')`)
	h.exec(runA)
	if err := db.MigrateUp(ctx, u, db.MigrateOptions{}); err != nil {
		t.Fatal(err)
	}
	var bucketsLeft bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass('job_line_locks') IS NOT NULL`).Scan(&bucketsLeft); err != nil || bucketsLeft {
		t.Fatalf("after the migration: job_line_locks left %v (%v)", bucketsLeft, err)
	}
	// Behind the running job, committed by another transaction: the
	// insert takes the game's lock and says "not the head".
	h.exec(`INSERT INTO jobs (host_id, game_id, kind) VALUES ('h', 'a', 'stop')`)
	if got := h.queuedHeads(); got != "b:3" {
		t.Fatalf("queued heads with a running: %q, want \"b:3\"", got)
	}
	h.exec(finishA)
	if got := h.queuedHeads(); got != "a:2 b:3" {
		t.Fatalf("queued heads after a's finish: %q, want \"a:2 b:3\"", got)
	}
	if err := db.MigrateDown(ctx, u, migrationsFrom(t, 14), db.MigrateOptions{}); err != nil {
		t.Fatal(err)
	}
	var buckets int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM job_line_locks`).Scan(&buckets); err != nil || buckets != 65536 {
		t.Fatalf("after the way back: %d buckets (%v)", buckets, err)
	}
	h.exec(runA)
	h.exec(finishA)
	if got := h.queuedHeads(); got != "b:3 a:4" {
		t.Fatalf("queued heads after the way back and a's second finish: %q, want \"b:3 a:4\"", got)
	}
}

// TestMigration15KeysTheOutboxByXidAndId: the outbox's primary key moves
// from id to (xid, id) and back with events in it, which keep their
// order; afterwards no index of the outbox is on id alone, and the key
// refuses a second row at a taken (xid, id).
func TestMigration15KeysTheOutboxByXidAndId(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	u, conn := justBefore(t, 15)
	// Three transactions, the first one's events written last.
	other, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(ctx)
	first, err := other.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := first.Exec(ctx, `SELECT pg_current_xact_id()`); err != nil {
		t.Fatal(err)
	}
	for _, g := range []string{"b", "c"} {
		if _, err := conn.Exec(ctx, `INSERT INTO outbox (type, host_id, game_id, payload) VALUES ('e', 'h', $1, '{}'), ('e', 'h', $1, '{}')`, g); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := first.Exec(ctx, `INSERT INTO outbox (type, host_id, game_id, payload) VALUES ('e', 'h', 'a', '{}')`); err != nil {
		t.Fatal(err)
	}
	if err := first.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	order := func() string {
		t.Helper()
		var got string
		if err := conn.QueryRow(ctx, `SELECT string_agg(game_id || id, ' ' ORDER BY xid, id) FROM outbox`).Scan(&got); err != nil {
			t.Fatal(err)
		}
		return got
	}
	keyColumns := func() (key string, idAlone bool) {
		t.Helper()
		if err := conn.QueryRow(ctx, `SELECT
  (SELECT string_agg(a.attname, ',' ORDER BY k.n) FROM pg_index i, unnest(i.indkey) WITH ORDINALITY AS k(att, n), pg_attribute a
   WHERE i.indrelid = 'outbox'::regclass AND i.indisprimary AND a.attrelid = i.indrelid AND a.attnum = k.att),
  EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = 'outbox'::regclass AND i.indkey::text = (SELECT attnum::text FROM pg_attribute WHERE attrelid = 'outbox'::regclass AND attname = 'id'))`).Scan(&key, &idAlone); err != nil {
			t.Fatal(err)
		}
		return key, idAlone
	}
	const want = "a5 b1 b2 c3 c4"
	if got := order(); got != want {
		t.Fatalf("events before the migration in (xid, id) order: %q, want %q", got, want)
	}
	if err := db.MigrateUp(ctx, u, db.MigrateOptions{}); err != nil {
		t.Fatal(err)
	}
	if key, idAlone := keyColumns(); key != "xid,id" || idAlone {
		t.Fatalf("after the migration: primary key (%s), an index on id alone: %v", key, idAlone)
	}
	if got := order(); got != want {
		t.Fatalf("events after the migration: %q, want %q", got, want)
	}
	_, err = conn.Exec(ctx, `INSERT INTO outbox (id, xid, type, host_id, game_id, payload) OVERRIDING SYSTEM VALUE
SELECT id, xid, 'e', 'h', 'x', '{}' FROM outbox WHERE game_id = 'a'`)
	if err == nil || !strings.Contains(err.Error(), "outbox_pkey") {
		t.Fatalf("a second event at a taken (xid, id): %v, want a violation of outbox_pkey", err)
	}
	if err := db.MigrateDown(ctx, u, migrationsFrom(t, 15), db.MigrateOptions{}); err != nil {
		t.Fatal(err)
	}
	if key, idAlone := keyColumns(); key != "id" || !idAlone {
		t.Fatalf("after the way back: primary key (%s), an index on id alone: %v", key, idAlone)
	}
	if got := order(); got != want {
		t.Fatalf("events after the way back: %q, want %q", got, want)
	}
}

// TestMigration16KeepsTheLinesGoing: a job waiting behind a running one
// when migration 16 runs is found through the new index of waiting jobs
// and promoted when the running one ends; a reopened job is marked the
// head by the trigger in either direction, and the way back promotes as
// before.
func TestMigration16KeepsTheLinesGoing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	u, conn := justBefore(t, 16)
	h := byHand{t, conn}
	h.exec(`INSERT INTO jobs (host_id, game_id, kind) VALUES ('h', 'a', 'stop'), ('h', 'a', 'stop'), ('h', 'a', 'stop'), ('h', 'b', 'stop')`)
	h.exec(runA)
	if err := db.MigrateUp(ctx, u, db.MigrateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.exec(finishA)
	if got := h.queuedHeads(); got != "a:2 b:4" {
		t.Fatalf("queued heads after a's finish: %q, want \"a:2 b:4\"", got)
	}
	reopen := func(id int) {
		t.Helper()
		h.exec(fmt.Sprintf(`UPDATE jobs SET status = 'cancelled', finished_at = now() WHERE id = %d`, id))
		h.exec(fmt.Sprintf(`UPDATE jobs SET status = 'queued', finished_at = NULL WHERE id = %d`, id))
	}
	reopen(3)
	if got := h.queuedHeads(); got != "a:2 a:3 b:4" {
		t.Fatalf("queued heads after job 3 was reopened: %q, want \"a:2 a:3 b:4\"", got)
	}
	if err := db.MigrateDown(ctx, u, migrationsFrom(t, 16), db.MigrateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.exec(`UPDATE jobs SET is_head = false WHERE id = 3`)
	h.exec(`INSERT INTO jobs (host_id, game_id, kind) VALUES ('h', 'a', 'stop')`)
	reopen(5)
	h.exec(runA)
	h.exec(finishA)
	if got := h.queuedHeads(); got != "a:3 b:4 a:5" {
		t.Fatalf("queued heads after the way back: %q, want \"a:3 b:4 a:5\"", got)
	}
}
