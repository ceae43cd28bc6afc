package db_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/domain/job"
)

// The inserts' side of the head marker (migration 000014): what an insert
// marks and which locks it holds, alone, beside another insert, in a mass
// insert and under a stricter isolation. The race with finishes is in
// heads_test.go.

// TestHeadsOfAMassInsert: the Game Master's mass operation, 50,000 jobs in
// one plain INSERT, works and marks one head per game, for 50,000 new
// games and for 100 games with long lines; and 50,000 more jobs of the
// 50,000 games, each behind another transaction's job, work too and leave
// every game exactly one head: the insert holds game locks up to half of
// max_locks_per_transaction and then the lines lock (migration 000014),
// not 50,000 advisory locks, which would fill the server's lock table
// ("out of shared memory").
func TestHeadsOfAMassInsert(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	for _, games := range []int{50_000, 100} {
		host := fmt.Sprintf("host-mass-%d", games)
		if _, err := s.Pool().Exec(ctx,
			`INSERT INTO jobs (host_id, game_id, kind) SELECT $1, $1 || '-' || (i % $2), 'stop' FROM generate_series(1, 50000) i`,
			host, games); err != nil {
			t.Fatalf("insert 50,000 jobs over %d games: %v", games, err)
		}
		var heads int
		if err := s.Pool().QueryRow(ctx, `SELECT count(*) FROM jobs WHERE host_id = $1 AND status = 'queued' AND is_head`, host).Scan(&heads); err != nil {
			t.Fatal(err)
		}
		if heads != games {
			t.Errorf("%d games: %d heads", games, heads)
		}
	}
	checkHeads(t, s, "host-mass-100")

	const host = "host-mass-50000"
	var locks, perTx int
	if err := s.Pool().QueryRow(ctx, "SELECT current_setting('max_locks_per_transaction')::int").Scan(&perTx); err != nil {
		t.Fatal(err)
	}
	err := pgx.BeginFunc(ctx, s.Pool(), func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx,
			`INSERT INTO jobs (host_id, game_id, kind) SELECT $1, $1 || '-' || (i % 50000), 'stop' FROM generate_series(1, 50000) i`,
			host); err != nil {
			return fmt.Errorf("insert 50,000 jobs behind another transaction's: %w", err)
		}
		return tx.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()`).Scan(&locks)
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := perTx/2 + 1; locks != want {
		t.Errorf("the insert behind 50,000 games held %d advisory locks, want %d (half of max_locks_per_transaction %d in games, and the lines lock)", locks, want, perTx)
	}
	checkHeads(t, s, host)
}

// TestCrossingInsertsOfNewGamesDoNotWait: two Game Master transactions
// that insert the first jobs of the same new games in opposite orders both
// commit. With a lock row made per game by its first insert (migration
// 000010) each waited for the other's uncommitted row, a deadlock
// PostgreSQL broke by aborting one of them; an insert now waits for nobody.
// The jobs still run in id order per game.
func TestCrossingInsertsOfNewGamesDoNotWait(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool := s.Pool()
	const host = "host-crossing"
	insert := func(tx pgx.Tx, game string) (int64, error) {
		var id int64
		err := tx.QueryRow(ctx, `INSERT INTO jobs (host_id, game_id, kind) VALUES ($1, $2, 'stop') RETURNING id`, host, game).Scan(&id)
		return id, err
	}
	tx1, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx1.Rollback(ctx) }()
	tx2, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx2.Rollback(ctx) }()
	a1, err := insert(tx1, "crossing-a")
	if err != nil {
		t.Fatal(err)
	}
	b2, err := insert(tx2, "crossing-b")
	if err != nil {
		t.Fatal(err)
	}
	type res struct {
		id  int64
		err error
	}
	b1c, a2c := make(chan res, 1), make(chan res, 1)
	go func() { id, err := insert(tx1, "crossing-b"); b1c <- res{id, err} }()
	go func() { id, err := insert(tx2, "crossing-a"); a2c <- res{id, err} }()
	b1, a2 := <-b1c, <-a2c
	if b1.err != nil || a2.err != nil {
		t.Fatalf("crossing inserts of the same new games: %v; %v", b1.err, a2.err)
	}
	if err := tx1.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := tx2.Commit(ctx); err != nil {
		t.Fatal(err)
	}

	// Per game, one at a time in id order.
	for round, want := range [][2]int64{{a1, b2}, {a2.id, b1.id}} {
		claimed, err := s.ClaimJobs(ctx, host, "o", 10, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		got := map[int64]bool{}
		for _, j := range claimed {
			got[j.ID] = true
		}
		if len(claimed) != 2 || !got[want[0]] || !got[want[1]] {
			t.Fatalf("claim %d took %+v, want jobs %d and %d", round, claimed, want[0], want[1])
		}
		var fs []db.Finish
		for _, j := range claimed {
			fs = append(fs, db.Finish{Job: j, Outcome: db.Outcome{Status: job.StatusSucceeded}})
		}
		if done, err := s.FinishJobs(ctx, "o", fs); err != nil || len(done) != 2 {
			t.Fatalf("finish %v: %v", done, err)
		}
	}
	if left := stranded(t, s, host); left != "" {
		t.Fatalf("stranded: %s", left)
	}
}

// TestHeadsUnderRepeatableRead: an insert in REPEATABLE READ cannot read
// afresh after taking its game's line, so it is always marked the head
// (the claim's guard keeps the order); ending a head there is refused with
// a clear error rather than risk leaving the next job unmarked.
func TestHeadsUnderRepeatableRead(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	pool := s.Pool()
	const host = "host-rr"
	var first int64
	if err := pool.QueryRow(ctx, `INSERT INTO jobs (host_id, game_id, kind) VALUES ($1, 'rr', 'stop') RETURNING id`, host).Scan(&first); err != nil {
		t.Fatal(err)
	}
	tx, err := pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	var second int64
	var head bool
	if err := tx.QueryRow(ctx, `INSERT INTO jobs (host_id, game_id, kind) VALUES ($1, 'rr', 'stop') RETURNING id, is_head`, host).Scan(&second, &head); err != nil {
		t.Fatal(err)
	}
	if !head {
		t.Fatalf("job %d inserted in REPEATABLE READ behind job %d: is_head false", second, first)
	}
	_, err = tx.Exec(ctx, `UPDATE jobs SET status = 'cancelled', finished_at = now() WHERE id = $1`, first)
	if err == nil || !strings.Contains(err.Error(), "READ COMMITTED") {
		t.Fatalf("end of a head in REPEATABLE READ: %v", err)
	}
	_ = tx.Rollback(ctx)
	// The guard keeps the order for a spuriously marked head.
	if _, err := pool.Exec(ctx, `INSERT INTO jobs (host_id, game_id, kind) VALUES ($1, 'rr', 'stop')`, host); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `UPDATE jobs SET is_head = true WHERE host_id = $1`, host); err != nil {
		t.Fatal(err)
	}
	claimed, err := s.ClaimJobs(ctx, host, "o", 10, time.Minute)
	if err != nil || len(claimed) != 1 || claimed[0].ID != first {
		t.Fatalf("claim with every job marked: %+v, %v (want only job %d)", claimed, err, first)
	}
}

// TestHeadLockSettingsCannotSkipTheLock: the insert's count of the game
// locks it took is a setting a session can write too; no value of it lets
// an insert behind another transaction's job say "not the head" without a
// lock (migration 000014): anything but a count under the cap takes the
// lines lock.
func TestHeadLockSettingsCannotSkipTheLock(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	const host = "host-spoof"
	for i, held := range []string{"all", "not a count", "-1", "999999999"} {
		game := fmt.Sprintf("spoof-%d", i)
		if _, err := s.Pool().Exec(ctx, `INSERT INTO jobs (host_id, game_id, kind) VALUES ($1, $2, 'stop')`, host, game); err != nil {
			t.Fatal(err)
		}
		var head bool
		var lines int
		err := pgx.BeginFunc(ctx, s.Pool(), func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "SELECT set_config('rtm.head_lines_held', $1, true)", held); err != nil {
				return err
			}
			if err := tx.QueryRow(ctx, `INSERT INTO jobs (host_id, game_id, kind) VALUES ($1, $2, 'stop') RETURNING is_head`, host, game).Scan(&head); err != nil {
				return err
			}
			return tx.QueryRow(ctx, `SELECT count(*) FROM pg_locks
WHERE locktype = 'advisory' AND classid = 1920238 AND objid = 0 AND objsubid = 2
  AND mode = 'ExclusiveLock' AND granted AND pid = pg_backend_pid()`).Scan(&lines)
		})
		if err != nil {
			t.Fatalf("rtm.head_lines_held %q: %v", held, err)
		}
		if head || lines != 1 {
			t.Errorf("rtm.head_lines_held %q: the job behind another's is_head %v, lines lock held %d times (want false, 1)", held, head, lines)
		}
	}
	checkHeads(t, s, host)
}
