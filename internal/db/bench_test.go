package db_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/domain/job"
	"github.com/galaxy/rtmanager/internal/domain/outbox"
	"github.com/galaxy/rtmanager/internal/domain/runtime"
	"github.com/galaxy/rtmanager/internal/testutil/pgtest"
	"github.com/galaxy/rtmanager/internal/testutil/wait"
)

// BenchmarkRawCommit is the baseline for the store's figures: one INSERT in
// its own transaction, on the same server in the same run.
func BenchmarkRawCommit(b *testing.B) {
	pool := pgtest.Pool(b)
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
}

// BenchmarkUpdateRecord measures one record transition with its outbox
// event (lock, read, upsert, insert, commit): a stop and a start, in turn.
func BenchmarkUpdateRecord(b *testing.B) {
	s := db.NewStore(pgtest.Pool(b), nil)
	ctx := context.Background()
	const games = 64
	for g := 0; g < games; g++ {
		id := fmt.Sprintf("g%d", g)
		_, err := s.UpdateRecord(ctx, id, func(_ *runtime.RuntimeRecord, at time.Time) (runtime.RuntimeRecord, outbox.TransitionDetails, error) {
			r, err := runtime.Create(placement(id), "c1", "engine:1", at)
			return r, outbox.TransitionDetails{Reason: outbox.ReasonJobStart}, err
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	toggle := func(cur *runtime.RuntimeRecord, at time.Time) (runtime.RuntimeRecord, outbox.TransitionDetails, error) {
		if cur.Status == runtime.StatusRunning {
			r, err := cur.Stop("c1", at)
			return r, outbox.TransitionDetails{Reason: outbox.ReasonObservedDie}, err
		}
		r, err := cur.ObserveStart("c1", at)
		return r, outbox.TransitionDetails{Reason: outbox.ReasonObservedStart}, err
	}
	i := 0
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.UpdateRecord(ctx, fmt.Sprintf("g%d", i%games), toggle); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkClaimFinish measures the queue's own cost per job: claim a batch
// of due jobs, finish each with its outcome event.
func BenchmarkClaimFinish(b *testing.B) {
	s := db.NewStore(pgtest.Pool(b), nil)
	ctx := context.Background()
	const batch = 32
	for i := 0; i < b.N; i++ {
		if _, _, err := s.InsertJob(ctx, db.NewJob{HostID: "host-a", GameID: fmt.Sprintf("g%d", i%1000), Kind: job.KindStop}); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	done := 0
	for done < b.N {
		jobs, err := s.ClaimJobs(ctx, "host-a", "agent-1", batch, time.Minute)
		if err != nil {
			b.Fatal(err)
		}
		if len(jobs) == 0 {
			b.Fatalf("no job claimable after %d of %d", done, b.N)
		}
		for _, j := range jobs {
			if _, err := s.FinishJob(ctx, j, "agent-1", db.Outcome{Status: job.StatusSucceeded}); err != nil {
				b.Fatal(err)
			}
		}
		done += len(jobs)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "jobs/s")
}

// BenchmarkClaimFinishBatch is BenchmarkClaimFinish with the batch finish:
// claim up to batch due jobs, finish them all in one FinishJobs. The jobs
// are of 100 games, in lines, so each finish promotes the next job of each
// game it ends (at batch=100, every game's head at once).
func BenchmarkClaimFinishBatch(b *testing.B) {
	for _, batch := range []int{1, 8, 32, 100} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			s := db.NewStore(pgtest.Pool(b), nil)
			ctx := context.Background()
			if _, err := s.Pool().Exec(ctx,
				`INSERT INTO jobs (host_id, game_id, kind) SELECT 'host-a', 'g' || (i % 100), 'stop' FROM generate_series(1, $1) i`, b.N); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			var claimT, finishT time.Duration
			done := 0
			for done < b.N {
				t0 := time.Now()
				jobs, err := s.ClaimJobs(ctx, "host-a", "agent-1", batch, time.Minute)
				if err != nil {
					b.Fatal(err)
				}
				if len(jobs) == 0 {
					b.Fatalf("no job claimable after %d of %d", done, b.N)
				}
				t1 := time.Now()
				fs := make([]db.Finish, len(jobs))
				for i, j := range jobs {
					fs[i] = db.Finish{Job: j, Outcome: db.Outcome{Status: job.StatusSucceeded}}
				}
				if got, err := s.FinishJobs(ctx, "agent-1", fs); err != nil || len(got) != len(jobs) {
					b.Fatalf("finish: %d of %d, %v", len(got), len(jobs), err)
				}
				claimT += t1.Sub(t0)
				finishT += time.Since(t1)
				done += len(jobs)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "jobs/s")
			b.ReportMetric(float64(claimT.Microseconds())/float64(b.N), "claim_us/job")
			b.ReportMetric(float64(finishT.Microseconds())/float64(b.N), "finish_us/job")
		})
	}
}

// BenchmarkFinishParts times one batch finish of 256 running jobs, each of
// a game of its own (the no-op benchmark's shape), whole and with a part of
// its work switched off, so that the parts' shares can be read as
// differences: "no_promotion" disables the statement trigger that promotes
// the next job of each ended head (migration 000010), "no_events" drops
// the outbox rows in a BEFORE INSERT trigger, "neither" does both, and
// "no_head_lock" promotes without first taking the games' locks again
// and the lines lock (migration 000014; unsafe beside concurrent inserts,
// timed to price the statements). Only "whole" is what the agent runs.
func BenchmarkFinishParts(b *testing.B) {
	for _, part := range []string{"whole", "no_promotion", "no_events", "neither", "no_head_lock"} {
		b.Run(part, func(b *testing.B) {
			s := db.NewStore(pgtest.Pool(b), nil)
			setup := map[string][]string{
				"no_promotion": {"ALTER TABLE jobs DISABLE TRIGGER jobs_head_finish"},
				"no_events": {`CREATE FUNCTION bench_drop_row() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NULL; END'`,
					"CREATE TRIGGER bench_drop_event BEFORE INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION bench_drop_row()"},
			}
			setup["neither"] = append(setup["no_promotion"], setup["no_events"]...)
			if part == "no_head_lock" {
				setup[part] = []string{promoteWithoutHeadLock(b, s)}
			}
			benchFinish(b, s, 256, setup[part], "finish-"+part)
		})
	}
}

// BenchmarkFinishBatchSize times the whole batch finish of 256, 1,024 and
// 2,000 jobs, each of a game of its own: its cost per job must not grow
// with the batch (it did, with the square of it, while the per-job text
// values were read by place from text[]).
func BenchmarkFinishBatchSize(b *testing.B) {
	for _, batch := range []int{256, 1024, 2000} {
		b.Run(strconv.Itoa(batch), func(b *testing.B) {
			benchFinish(b, db.NewStore(pgtest.Pool(b), nil), batch, nil, fmt.Sprintf("finish-batch-%d", batch))
		})
	}
}

// benchFinish runs setup, then times b.N finishes of batch running jobs,
// each of a game of its own (the no-op benchmark's shape), and reports
// the time per job.
func benchFinish(b *testing.B, s *db.Store, batch int, setup []string, profile string) {
	ctx := context.Background()
	for _, q := range setup {
		if _, err := s.Pool().Exec(ctx, q); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := s.Pool().Exec(ctx,
		`INSERT INTO jobs (host_id, game_id, kind) SELECT 'host-a', 'g' || i, 'stop' FROM generate_series(1, $1) i`, b.N*batch); err != nil {
		b.Fatal(err)
	}
	batches := make([][]db.Finish, 0, b.N)
	for range b.N {
		jobs, err := s.ClaimJobs(ctx, "host-a", "agent-1", batch, time.Hour)
		if err != nil || len(jobs) != batch {
			b.Fatalf("claim: %d jobs, %v", len(jobs), err)
		}
		fs := make([]db.Finish, len(jobs))
		for i, j := range jobs {
			fs[i] = db.Finish{Job: j, Outcome: db.Outcome{Status: job.StatusSucceeded}}
		}
		batches = append(batches, fs)
	}
	if _, err := s.Pool().Exec(ctx, "VACUUM ANALYZE jobs"); err != nil {
		b.Fatal(err)
	}
	stopProfile := perfRecord(b, profile)
	b.ResetTimer()
	for _, fs := range batches {
		if _, err := s.FinishJobs(ctx, "agent-1", fs); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	stopProfile()
	var left int
	if err := s.Pool().QueryRow(ctx, "SELECT count(*) FROM jobs WHERE status = 'running'").Scan(&left); err != nil || left != 0 {
		b.Fatalf("%d jobs still running after the finishes (%v)", left, err)
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*batch), "us/job")
}

// promoteWithoutHeadLock returns the definition of the promotion function
// as migrated, without the statements that take the games' locks and the
// lines lock: read from the server, so the variant follows the migrations.
func promoteWithoutHeadLock(b *testing.B, s *db.Store) string {
	b.Helper()
	var def string
	if err := s.Pool().QueryRow(context.Background(),
		"SELECT pg_get_functiondef('rtm_jobs_head_promote(text[], bigint[])'::regprocedure)").Scan(&def); err != nil {
		b.Fatal(err)
	}
	lock := regexp.MustCompile(`(?s)PERFORM pg_advisory_xact_lock\(.*?ORDER BY k\.key;\s*PERFORM pg_advisory_xact_lock_shared\(1920238, 0\);`)
	if len(lock.FindAllString(def, -1)) != 1 {
		b.Fatalf("the promotion no longer takes its locks in two statements:\n%s", def)
	}
	return lock.ReplaceAllString(def, "")
}

// perfRecord profiles the whole machine (the server's backends included)
// with perf until the returned function is called, when RTM_BENCH_PERF
// names a directory: the profile of the timed part only, in DIR/name.perf.
// Read the server's share with
//
//	perf report -i DIR/name.perf --comm postgres --percentage relative --children --sort symbol
func perfRecord(b *testing.B, name string) (stop func()) {
	b.Helper()
	dir := os.Getenv("RTM_BENCH_PERF")
	if dir == "" {
		return func() {}
	}
	file := filepath.Join(dir, name+".perf")
	_ = os.Remove(file)
	cmd := exec.Command("perf", "record", "-F", "1999", "-a", "-g", "-o", file)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		b.Fatalf("RTM_BENCH_PERF is set, but perf does not start (install linux-perf): %v", err)
	}
	// perf writes its file's header once it records.
	wait.For(b, 30*time.Second, "perf to start recording", func() bool {
		fi, err := os.Stat(file)
		return err == nil && fi.Size() > 0
	})
	return func() {
		_ = cmd.Process.Signal(os.Interrupt)
		// perf ends by its own SIGINT, so Wait reports the signal: what it
		// printed says whether the profile was written.
		err := cmd.Wait()
		if !strings.Contains(out.String(), "Captured and wrote") {
			b.Fatalf("perf record: %v\n%s", err, out.String())
		}
	}
}

// BenchmarkMassInsert is the Game Master's mass operation: one plain INSERT
// of 50,000 jobs, over 100 games (long lines) and over 50,000 (one job
// each). Its baseline, "plain", is the same INSERT into a copy of the jobs
// table with the same columns, defaults, indexes and insert notification
// but without the triggers that keep the head marker (migration 000010),
// so the difference is what the marker costs an insert.
func BenchmarkMassInsert(b *testing.B) {
	pool := pgtest.Pool(b)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `CREATE TABLE jobs_plain (LIKE jobs INCLUDING ALL);
CREATE TRIGGER jobs_plain_notify AFTER INSERT ON jobs_plain FOR EACH ROW EXECUTE FUNCTION rtm_jobs_notify()`); err != nil {
		b.Fatal(err)
	}
	for _, games := range []int{100, 50_000} {
		for _, table := range []string{"plain", "jobs"} {
			name := map[string]string{"plain": "jobs_plain", "jobs": "jobs"}[table]
			b.Run(fmt.Sprintf("games=%d/%s", games, table), func(b *testing.B) {
				for b.Loop() {
					b.StopTimer()
					if _, err := pool.Exec(ctx, "TRUNCATE "+name); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
					if _, err := pool.Exec(ctx, `INSERT INTO `+name+` (host_id, game_id, kind)
SELECT 'h', 'g' || (i % $1), 'stop' FROM generate_series(1, 50000) i`, games); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/50_000, "ns/job")
			})
		}
	}
}

// BenchmarkHotGameChain runs one game's jobs one after the other (claim
// one, finish it), its queue kept at depth jobs by an insert of 20 for
// every 20 run: what a hot game's own rate costs with a short queue and a
// long one, as its finished jobs pile up. The game's queue is the whole
// table when its statistics are taken (the queue bench's hot-game row
// has half): the generic plans of the head marker's probes then read the
// game's history unless their form keeps them on the row comparison
// (migration 000017).
func BenchmarkHotGameChain(b *testing.B) {
	for _, depth := range []int{100, 10_000} {
		b.Run(fmt.Sprintf("depth=%d", depth), func(b *testing.B) {
			s := db.NewStore(pgtest.Pool(b), nil)
			ctx := context.Background()
			insert := func(n int) {
				if _, err := s.Pool().Exec(ctx,
					`INSERT INTO jobs (host_id, game_id, kind) SELECT 'host-a', 'hot', 'stop' FROM generate_series(1, $1) i`, n); err != nil {
					b.Fatal(err)
				}
			}
			insert(depth)
			if _, err := s.Pool().Exec(ctx, "VACUUM ANALYZE jobs"); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			var claimT, finishT time.Duration
			for i := range b.N {
				t0 := time.Now()
				jobs, err := s.ClaimJobs(ctx, "host-a", "agent-1", 1, time.Minute)
				if err != nil || len(jobs) != 1 {
					b.Fatalf("claim %d: %d jobs, %v", i, len(jobs), err)
				}
				t1 := time.Now()
				if got, err := s.FinishJobs(ctx, "agent-1", []db.Finish{{Job: jobs[0], Outcome: db.Outcome{Status: job.StatusSucceeded}}}); err != nil || len(got) != 1 {
					b.Fatalf("finish %d: %v", i, err)
				}
				claimT += t1.Sub(t0)
				finishT += time.Since(t1)
				if i%20 == 19 {
					insert(20)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "jobs/s")
			b.ReportMetric(float64(claimT.Microseconds())/float64(b.N), "claim_us/job")
			b.ReportMetric(float64(finishT.Microseconds())/float64(b.N), "finish_us/job")
		})
	}
}
