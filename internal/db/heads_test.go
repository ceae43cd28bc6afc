package db_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/domain/job"
	"github.com/galaxy/rtmanager/internal/testutil/wait"
)

// The claim reads only jobs marked as the head of their game's line
// (migration 000010). The race that could strand a job: a Game Master's
// INSERT that sees its game's last unfinished job still running (so the new
// job is not the head) while that job's finish, not yet committed, looks
// for the next job to promote and cannot see the insert. This hammers
// exactly that: short lines (a game's queue is mostly empty, so inserts keep
// landing beside the finish of the game's last job), plain INSERTs of one
// and of many rows in random game order, batch finishes, and cancels of
// queued jobs (which promote too). It asserts that every job ends (none is
// left queued forever) and that per-game FIFO holds: a game's jobs are
// claimed in id order, one at a time.
func TestHeadsSurviveConcurrentInsertAndFinish(t *testing.T) {
	t.Parallel()
	hammerHeads(t, "")
}

// TestHeadsSurviveConcurrentInsertAndFinishPastTheLockCap is the same race
// with rtm.head_line_locks at 1: an INSERT of several rows behind others'
// jobs takes one game's lock and then the lines lock (migration 000014),
// the path of a mass insert past 32 games (by default).
func TestHeadsSurviveConcurrentInsertAndFinishPastTheLockCap(t *testing.T) {
	t.Parallel()
	hammerHeads(t, "1")
}

// hammerHeads runs the race of TestHeadsSurviveConcurrentInsertAndFinish,
// with the inserts' rtm.head_line_locks set to lineLocks unless empty.
func hammerHeads(t *testing.T, lineLocks string) {
	s := newStore(t)
	pool := s.Pool()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const (
		host      = "host-race"
		games     = 12
		inserters = 3 // each owns games i%inserters == k, so a game's ids commit in id order
		workers   = 3
		perInsert = 1500
	)
	gameName := func(i int) string { return fmt.Sprintf("race-%d", i) }

	var (
		mu          sync.Mutex
		running     = map[string]int64{} // game -> job a worker holds
		lastClaimed = map[string]int64{} // game -> highest job id claimed
		violations  []string
		claimedN    atomic.Int64
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(violations) < 20 {
			violations = append(violations, fmt.Sprintf(format, args...))
		}
	}

	insertsDone := make(chan struct{})
	var insertErr atomic.Pointer[error]
	var iwg sync.WaitGroup
	for k := range inserters {
		iwg.Add(1)
		go func() {
			defer iwg.Done()
			rng := rand.New(rand.NewPCG(uint64(k), 14))
			var mine []string
			for g := range games {
				if g%inserters == k {
					mine = append(mine, gameName(g))
				}
			}
			for sent := 0; sent < perInsert; {
				// One row, or one statement of several rows over the
				// inserter's games in random order (the Game Master's mass
				// operation), as plain INSERTs.
				n := 1
				if rng.IntN(4) == 0 {
					n = 2 + rng.IntN(6)
				}
				ids := make([]string, n)
				for i := range ids {
					ids[i] = mine[rng.IntN(len(mine))]
				}
				err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
					if lineLocks != "" {
						if _, err := tx.Exec(ctx, "SELECT set_config('rtm.head_line_locks', $1, true)", lineLocks); err != nil {
							return err
						}
					}
					_, err := tx.Exec(ctx,
						`INSERT INTO jobs (host_id, game_id, kind) SELECT $1, g, 'stop' FROM unnest($2::text[]) WITH ORDINALITY AS u(g, o) ORDER BY o`,
						host, ids)
					return err
				})
				if err != nil {
					insertErr.Store(&err)
					return
				}
				sent += n
			}
		}()
	}
	go func() { iwg.Wait(); close(insertsDone) }()

	// A canceller withdraws a few queued jobs: a cancelled head promotes
	// the next job as a finish does, and a cancel in the middle of a line
	// must change nothing.
	var cwg sync.WaitGroup
	cwg.Add(1)
	go func() {
		defer cwg.Done()
		rng := rand.New(rand.NewPCG(99, 14))
		for {
			select {
			case <-insertsDone:
				return
			default:
			}
			var id int64
			err := pool.QueryRow(ctx, `SELECT id FROM jobs WHERE host_id = $1 AND status = 'queued' ORDER BY id DESC OFFSET $2 LIMIT 1`,
				host, rng.IntN(3)).Scan(&id)
			if err != nil {
				continue // nothing queued right now
			}
			if _, err := s.CancelJob(ctx, id); err != nil && !errors.Is(err, db.ErrJobFinished) && ctx.Err() == nil {
				fail("cancel %d: %v", id, err)
			}
		}
	}()

	var wwg sync.WaitGroup
	for w := range workers {
		wwg.Add(1)
		go func() {
			defer wwg.Done()
			owner := fmt.Sprintf("racer-%d", w)
			for ctx.Err() == nil {
				claimed, err := s.ClaimJobs(ctx, host, owner, 4, time.Minute)
				if err != nil {
					if ctx.Err() == nil {
						fail("claim: %v", err)
					}
					return
				}
				if len(claimed) == 0 {
					continue
				}
				mu.Lock()
				for _, j := range claimed {
					if other, ok := running[j.GameID]; ok {
						violations = append(violations, fmt.Sprintf("game %s: job %d claimed while job %d runs", j.GameID, j.ID, other))
					}
					if j.ID <= lastClaimed[j.GameID] {
						violations = append(violations, fmt.Sprintf("game %s: job %d claimed after job %d", j.GameID, j.ID, lastClaimed[j.GameID]))
					}
					running[j.GameID] = j.ID
					lastClaimed[j.GameID] = j.ID
				}
				// Before the finish commits, so that the next claim of the
				// game (possible only after that commit) finds it free.
				for _, j := range claimed {
					delete(running, j.GameID)
				}
				mu.Unlock()
				claimedN.Add(int64(len(claimed)))
				batch := make([]db.Finish, len(claimed))
				for i, j := range claimed {
					batch[i] = db.Finish{Job: j, Outcome: db.Outcome{Status: job.StatusSucceeded}}
				}
				done, err := s.FinishJobs(ctx, owner, batch)
				if err != nil {
					fail("finish: %v", err)
					return
				}
				if len(done) != len(batch) {
					fail("finish: %d of %d jobs finished", len(done), len(batch))
				}
			}
		}()
	}

	<-insertsDone
	cwg.Wait()
	if p := insertErr.Load(); p != nil {
		t.Fatalf("insert: %v", *p)
	}
	total := inserters * perInsert
	wait.ForErr(t, 30*time.Second, "every job to end", func() (bool, error) {
		var open int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM jobs WHERE host_id = $1 AND status IN ('queued', 'running')`, host).Scan(&open); err != nil {
			return false, err
		}
		if open == 0 {
			return true, nil
		}
		return false, fmt.Errorf("%d jobs unfinished; stranded (queued, not the head, nothing unfinished before): %s", open, stranded(t, s, host))
	})
	cancel()
	wwg.Wait()

	var ended, succeeded int
	if err := pool.QueryRow(context.Background(),
		`SELECT count(*), count(*) FILTER (WHERE status = 'succeeded') FROM jobs WHERE host_id = $1`, host).Scan(&ended, &succeeded); err != nil {
		t.Fatal(err)
	}
	if ended < total {
		t.Errorf("%d jobs in the table, %d inserted", ended, total)
	}
	if int64(succeeded) != claimedN.Load() {
		t.Errorf("%d jobs succeeded, %d claimed", succeeded, claimedN.Load())
	}
	if len(violations) > 0 {
		t.Errorf("FIFO or finish violated:\n%s", strings.Join(violations, "\n"))
	}
	t.Logf("%d jobs over %d games: %d claimed and finished, %d cancelled", ended, games, succeeded, ended-succeeded)
}

// stranded lists the jobs of host that no claim can ever take: queued, not
// marked as the head, with no unfinished job of their game before them.
func stranded(t *testing.T, s *db.Store, host string) string {
	t.Helper()
	var out string
	err := s.Pool().QueryRow(context.Background(), `
SELECT coalesce(string_agg(j.game_id || ':' || j.id, ' '), '')
FROM jobs j
WHERE j.host_id = $1 AND j.status = 'queued' AND NOT j.is_head
  AND NOT EXISTS (SELECT 1 FROM jobs e WHERE e.game_id = j.game_id AND e.status IN ('queued', 'running') AND e.id < j.id)`,
		host).Scan(&out)
	if err != nil {
		return err.Error()
	}
	return out
}

// checkHeads asserts the heads' invariant on host's games at rest: each
// game with unfinished jobs has its lowest one marked as the head, and (no
// write being in flight) no other queued job is marked.
func checkHeads(t *testing.T, s *db.Store, host string) {
	t.Helper()
	rows, err := s.Pool().Query(context.Background(), `
SELECT j.game_id, j.id, j.status, j.is_head,
       NOT EXISTS (SELECT 1 FROM jobs e WHERE e.game_id = j.game_id AND e.status IN ('queued', 'running') AND e.id < j.id) AS lowest
FROM jobs j
WHERE j.host_id = $1 AND j.status IN ('queued', 'running')
ORDER BY j.id`, host)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var game, status string
		var id int64
		var head, lowest bool
		if err := rows.Scan(&game, &id, &status, &head, &lowest); err != nil {
			t.Fatal(err)
		}
		if head != lowest {
			t.Errorf("game %s: job %d (%s) is_head %v, lowest unfinished %v", game, id, status, head, lowest)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
}

// TestHeadsFollowEveryPath: the head marker follows each way a job changes
// (insert of one and of many rows, claim, retry, release, lease expiry,
// finish, cancel of a head and of a job in the middle, delete) and the
// claim takes exactly the heads.
func TestHeadsFollowEveryPath(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	pool := s.Pool()
	ctx := context.Background()
	const host = "host-heads"
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := pool.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	// Three games of four jobs, interleaved, in one statement; one more
	// game by a single-row insert.
	exec(`INSERT INTO jobs (host_id, game_id, kind) SELECT $1, 'h' || (i % 3), 'stop' FROM generate_series(0, 11) i`, host)
	exec(`INSERT INTO jobs (host_id, game_id, kind) VALUES ($1, 'solo', 'stop')`, host)
	checkHeads(t, s, host)
	var heads int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM jobs WHERE host_id = $1 AND status = 'queued' AND is_head`, host).Scan(&heads); err != nil || heads != 4 {
		t.Fatalf("heads after insert: %d, %v (want 4)", heads, err)
	}

	claimed, err := s.ClaimJobs(ctx, host, "o1", 10, time.Minute)
	if err != nil || len(claimed) != 4 {
		t.Fatalf("claim: %d jobs, %v (want the 4 heads)", len(claimed), err)
	}
	checkHeads(t, s, host)
	byGame := map[string]db.Job{}
	for _, j := range claimed {
		byGame[j.GameID] = j
	}
	// Retry, release and lease expiry keep the head in place.
	if _, err := s.RetryJob(ctx, byGame["h0"], "o1", 0, "again"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReleaseJob(ctx, byGame["h1"], "o1"); err != nil {
		t.Fatal(err)
	}
	exec(`UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE id = $1`, byGame["h2"].ID)
	if _, err := s.RequeueExpiredLeases(ctx, host); err != nil {
		t.Fatal(err)
	}
	checkHeads(t, s, host)

	// Finish: the next job of the game becomes the head.
	again, err := s.ClaimJobs(ctx, host, "o2", 10, time.Minute)
	if err != nil || len(again) != 3 {
		t.Fatalf("claim again: %d jobs, %v", len(again), err)
	}
	batch := make([]db.Finish, len(again))
	for i, j := range again {
		batch[i] = db.Finish{Job: j, Outcome: db.Outcome{Status: job.StatusSucceeded}}
	}
	if _, err := s.FinishJobs(ctx, "o2", batch); err != nil {
		t.Fatal(err)
	}
	if _, err := s.FinishJob(ctx, byGame["solo"], "o1", db.Outcome{Status: job.StatusFailed, Error: "x"}); err != nil {
		t.Fatal(err)
	}
	checkHeads(t, s, host)

	// Cancel of a queued head, and of a job in the middle of its line.
	line := func(game string) []int64 {
		t.Helper()
		var ids []int64
		rows, err := pool.Query(ctx, `SELECT id FROM jobs WHERE game_id = $1 AND status = 'queued' ORDER BY id`, game)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		return ids
	}
	h0, h1 := line("h0"), line("h1")
	if len(h0) != 3 || len(h1) != 3 {
		t.Fatalf("lines: %v %v", h0, h1)
	}
	if _, err := s.CancelJob(ctx, h0[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CancelJob(ctx, h1[1]); err != nil {
		t.Fatal(err)
	}
	checkHeads(t, s, host)

	// Delete (no agent deletes an unfinished job, but the marker must
	// not strand the line if someone does).
	exec(`DELETE FROM jobs WHERE id = $1`, h0[1])
	checkHeads(t, s, host)

	// The claim takes the heads, and nothing behind them.
	last, err := s.ClaimJobs(ctx, host, "o3", 10, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	got := map[int64]bool{}
	for _, j := range last {
		got[j.ID] = true
	}
	if len(last) != 3 || !got[h0[2]] || !got[h1[0]] {
		t.Fatalf("claim of the heads: %+v", last)
	}
	checkHeads(t, s, host)
}

// TestJobsMadeUnfinishedAgainHeadTheirLine: a job that was not its game's
// head and becomes queued or running again (reopened by hand after it
// ended, or set running by hand) is marked the head, so that it is claimed
// or promoted from (migration 000016 made this an AFTER trigger). The mark may be spurious (an earlier
// job of the game is still unfinished); the claim's guard keeps the order.
// A job changed without a change of status keeps its mark.
func TestJobsMadeUnfinishedAgainHeadTheirLine(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	pool := s.Pool()
	ctx := context.Background()
	const host = "host-reopened"
	var ids []int64
	rows, err := pool.Query(ctx, `INSERT INTO jobs (host_id, game_id, kind) SELECT $1, 'reopen', 'stop' FROM generate_series(1, 4) RETURNING id`, host)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil || len(ids) != 4 {
		t.Fatalf("insert: %v, %v", ids, err)
	}
	head := func(id int64) bool {
		t.Helper()
		var h bool
		if err := pool.QueryRow(ctx, `SELECT is_head FROM jobs WHERE id = $1`, id).Scan(&h); err != nil {
			t.Fatal(err)
		}
		return h
	}
	if !head(ids[0]) || head(ids[1]) || head(ids[2]) || head(ids[3]) {
		t.Fatalf("after the insert only job %d should head the line", ids[0])
	}

	// The second job is cancelled while it waits, and reopened.
	if _, err := s.CancelJob(ctx, ids[1]); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `UPDATE jobs SET status = 'queued', finished_at = NULL WHERE id = $1`, ids[1]); err != nil {
		t.Fatal(err)
	}
	if !head(ids[1]) {
		t.Errorf("job %d, reopened, is not marked the head", ids[1])
	}
	// The third is set running by hand.
	if _, err := pool.Exec(ctx, `UPDATE jobs SET status = 'running', lease_owner = 'hand', lease_expires_at = now() + interval '1 hour', attempt = 1 WHERE id = $1`, ids[2]); err != nil {
		t.Fatal(err)
	}
	if !head(ids[2]) {
		t.Errorf("job %d, set running, is not marked the head", ids[2])
	}
	// The fourth is changed without a change of status: still waiting.
	if _, err := pool.Exec(ctx, `UPDATE jobs SET status = 'queued', payload = '{"x": 1}' WHERE id = $1`, ids[3]); err != nil {
		t.Fatal(err)
	}
	if head(ids[3]) {
		t.Errorf("job %d, updated without a change of status, became the head", ids[3])
	}
	// The claim takes the first head only: the guard keeps the order.
	claimed, err := s.ClaimJobs(ctx, host, "o1", 10, time.Minute)
	if err != nil || len(claimed) != 1 || claimed[0].ID != ids[0] {
		t.Fatalf("claim: %+v, %v (want only job %d)", claimed, err, ids[0])
	}
}
