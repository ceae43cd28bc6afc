package worker_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/galaxy/rtmanager/agent/worker"
	"github.com/galaxy/rtmanager/internal/db"
)

// BenchmarkQueueNoop measures the queue's own overhead: b.N no-op jobs of
// 100 games, inserted up front, worked down by the worker(s). The figure
// to read is jobs/s (River: about 14,000 on 2 cores).
func BenchmarkQueueNoop(b *testing.B) {
	for _, c := range []struct{ workers, concurrency int }{{1, 8}, {1, 32}, {4, 8}} {
		b.Run(fmt.Sprintf("workers=%d/concurrency=%d", c.workers, c.concurrency), func(b *testing.B) {
			s := newStore(b)
			if _, err := s.Pool().Exec(context.Background(),
				`INSERT INTO jobs (host_id, game_id, kind) SELECT $1, 'g' || (i % 100), 'stop' FROM generate_series(1, $2) i`,
				hostID, b.N); err != nil {
				b.Fatal(err)
			}
			var all []*worker.Worker
			b.ResetTimer()
			start := time.Now()
			for i := range c.workers {
				cfg := testConfig(fmt.Sprintf("owner-%d", i))
				cfg.Concurrency = c.concurrency
				cfg.LeaseDuration, cfg.LeaseRenewInterval = 30*time.Second, 10*time.Second
				cfg.Logger = quiet
				w := worker.New(s, worker.Noop, nil, cfg)
				all = append(all, w)
				startWorker(b, w)
			}
			for {
				var n int64
				for _, w := range all {
					n += w.Stats().Succeeded
				}
				if n >= int64(b.N) {
					break
				}
				time.Sleep(time.Millisecond) // benchmark polling, not test synchronisation
			}
			elapsed := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "jobs/s")
		})
	}
}

// BenchmarkPickupLatency measures insert → executor called on an idle
// worker woken by LISTEN/NOTIFY (polling set to an hour, so it cannot
// help).
func BenchmarkPickupLatency(b *testing.B) {
	s := newStore(b)
	called := make(chan struct{}, 1)
	exec := worker.ExecutorFunc(func(context.Context, worker.Task) (worker.Result, error) {
		called <- struct{}{}
		return worker.Result{}, nil
	})
	cfg := testConfig("owner-1")
	cfg.PollInterval = time.Hour
	cfg.Logger = quiet
	w := worker.New(s, exec, nil, cfg)
	startWorker(b, w)
	for !w.Listening() {
		time.Sleep(time.Millisecond)
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		t0 := time.Now()
		insertQuiet(b, s, fmt.Sprintf("g%d", i))
		<-called
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50_ms")
	b.ReportMetric(float64(lat[min(len(lat)-1, len(lat)*99/100)].Microseconds())/1000, "p99_ms")
}

func insertQuiet(b *testing.B, s *db.Store, gameID string) {
	if _, err := s.Pool().Exec(context.Background(),
		`INSERT INTO jobs (host_id, game_id, kind) VALUES ($1, $2, 'stop')`, hostID, gameID); err != nil {
		b.Fatal(err)
	}
}
