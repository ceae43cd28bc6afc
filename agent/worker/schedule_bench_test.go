package worker_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/galaxy/rtmanager/agent/worker"
	"github.com/galaxy/rtmanager/internal/db"
)

// Scheduled jobs per iteration of BenchmarkScheduledLateness, and how they
// are spread: the first due scheduleLead after the insert, the last
// scheduleSpread later.
const (
	scheduledJobs  = 1000
	scheduleLead   = 500 * time.Millisecond
	scheduleSpread = 3 * time.Second
)

// BenchmarkScheduledLateness measures how late scheduled jobs are claimed:
// 1,000 jobs of as many games, inserted at once (one statement) to fall due
// evenly over the next 0.5–3.5 s, worked by one idle worker with a no-op
// executor. Lateness is started_at − run_after, both on the database's
// clock; p50-ms and p99-ms are over every job of every iteration.
//
// listen is the agent's default set-up (LISTEN, queue poll 1 min: the
// insert's notification makes the worker claim once and arm its timer).
// poll is LISTEN off with the default 2 s poll: jobs due before the first
// poll after the insert wait for it, the rest run on the timer.
// raw/timer+claim is the baseline of the same run: one goroutine that
// knows every due time, sleeps until each, and runs a bare claim UPDATE,
// the least any Go scheduler on this database can do.
func BenchmarkScheduledLateness(b *testing.B) {
	b.Run("listen", func(b *testing.B) {
		cfg := testConfig("owner-1")
		cfg.PollInterval, cfg.RescueInterval = time.Minute, time.Minute
		benchLateness(b, cfg)
	})
	b.Run("poll", func(b *testing.B) {
		cfg := testConfig("owner-1")
		cfg.UseListen = false
		cfg.PollInterval, cfg.RescueInterval = 2*time.Second, time.Minute
		benchLateness(b, cfg)
	})
	b.Run("raw/timer+claim", benchRawLateness)
}

func benchLateness(b *testing.B, cfg worker.Config) {
	s := newStore(b)
	cfg.Concurrency = 8
	cfg.LeaseDuration, cfg.LeaseRenewInterval = 30*time.Second, 10*time.Second
	cfg.Logger = quiet
	w := worker.New(s, worker.Noop, cfg)
	startWorker(b, w)
	if cfg.UseListen {
		for !w.Listening() {
			time.Sleep(time.Millisecond) // benchmark set-up, not test synchronisation
		}
	}
	var late []time.Duration
	b.ResetTimer()
	for i := range b.N {
		insertScheduled(b, s, i)
		for w.Stats().Succeeded < int64((i+1)*scheduledJobs) {
			time.Sleep(time.Millisecond)
		}
		late = append(late, lateness(b, s, i)...)
	}
	b.StopTimer()
	reportLateness(b, late)
}

// insertScheduled inserts iteration i's jobs and returns their due times
// as offsets from the database's now() at the insert.
func insertScheduled(b *testing.B, s *db.Store, i int) []time.Duration {
	rows, err := s.Pool().Query(context.Background(), `
		INSERT INTO jobs (host_id, game_id, kind, run_after)
		SELECT $1, 'it' || $2::int || '-g' || n, 'stop', now() + ($3::bigint + (n - 1) * $4::bigint) * interval '1 microsecond'
		FROM generate_series(1, $5::int) n
		RETURNING (extract(epoch FROM run_after - now()) * 1000000)::bigint`,
		hostID, i, scheduleLead.Microseconds(), (scheduleSpread / scheduledJobs).Microseconds(), scheduledJobs)
	if err != nil {
		b.Fatal(err)
	}
	us, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		b.Fatal(err)
	}
	due := make([]time.Duration, len(us))
	for k, u := range us {
		due[k] = time.Duration(u) * time.Microsecond
	}
	return due
}

// lateness reads started_at − run_after of iteration i's jobs.
func lateness(b *testing.B, s *db.Store, i int) []time.Duration {
	rows, err := s.Pool().Query(context.Background(), `
		SELECT (extract(epoch FROM started_at - run_after) * 1000000)::bigint
		FROM jobs WHERE game_id LIKE 'it' || $1::int || '-g%'`, i)
	if err != nil {
		b.Fatal(err)
	}
	us, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		b.Fatal(err)
	}
	if len(us) != scheduledJobs {
		b.Fatalf("%d jobs claimed, want %d", len(us), scheduledJobs)
	}
	out := make([]time.Duration, len(us))
	for k, u := range us {
		if u < 0 {
			b.Fatalf("a job was claimed %d µs before its run_after", -u)
		}
		out[k] = time.Duration(u) * time.Microsecond
	}
	return out
}

// benchRawLateness: the baseline. It sleeps until each due time (offsets
// from the insert statement, so on the database's clock like the worker's
// timer) and claims what is due with one bare UPDATE.
func benchRawLateness(b *testing.B) {
	s := newStore(b)
	ctx := context.Background()
	var late []time.Duration
	b.ResetTimer()
	for i := range b.N {
		// The offsets count from the insert statement's start (its
		// now()): take the local time before sending it. (The worker
		// counts from after its claim returns: late by a round trip,
		// never early.)
		t0 := time.Now()
		due := insertScheduled(b, s, i)
		slices.Sort(due)
		claimed := 0
		for claimed < scheduledJobs {
			if k := min(claimed, len(due)-1); time.Since(t0) < due[k] {
				time.Sleep(due[k] - time.Since(t0))
			}
			tag, err := s.Pool().Exec(ctx, `
				UPDATE jobs SET status = 'running', attempt = 1, lease_owner = 'raw',
				    lease_expires_at = now() + interval '1 minute', started_at = now()
				WHERE host_id = $1 AND status = 'queued' AND run_after <= now()`, hostID)
			if err != nil {
				b.Fatal(err)
			}
			claimed += int(tag.RowsAffected())
		}
		late = append(late, lateness(b, s, i)...)
	}
	b.StopTimer()
	reportLateness(b, late)
}

func reportLateness(b *testing.B, late []time.Duration) {
	slices.Sort(late)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(late[len(late)/2]), "p50-ms")
	b.ReportMetric(ms(late[min(len(late)-1, len(late)*99/100)]), "p99-ms")
	b.ReportMetric(ms(late[len(late)-1]), "max-ms")
	b.ReportMetric(0, "ns/op") // the time of an iteration is the schedule's, not ours
}
