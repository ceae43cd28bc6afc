package watcher_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/moby/moby/client"
	"golang.org/x/sync/errgroup"

	"github.com/galaxy/rtmanager/agent/engine"
	"github.com/galaxy/rtmanager/agent/reconcile"
	"github.com/galaxy/rtmanager/agent/watcher"
	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/domain/runtime"
	"github.com/galaxy/rtmanager/internal/testutil/pgtest"
	"github.com/galaxy/rtmanager/internal/testutil/wait"
)

// BenchmarkDockerEventToCommit is the end-to-end measure on the real
// daemon: 200 engine containers are killed at a steady 200/s and the
// latency from each die event (daemon time) to its committed transition is
// taken (p50, p99; read-to-commit is the part after the watcher read the
// event). On a 2-core machine the daemon's own work of tearing 200
// containers down per second dominates; docker-burst-dies/s is how fast the
// daemon lets 200 simultaneous kills die, watcher included. The raw cost of
// one PostgreSQL commit (a one-row UPDATE in a transaction, same pool) is
// measured in the same run as the baseline.
func BenchmarkDockerEventToCommit(b *testing.B) {
	const (
		games = 200
		rate  = 200 // events per second in the paced phase
	)
	e := newEnv(b)
	var (
		mu    sync.Mutex
		lags  []time.Duration
		reads []time.Duration
		times []time.Time
	)
	e.startWatcher(watcher.Config{}, func(w *watcher.Watcher) {
		watcher.SetAppliedHook(w, func(ev engine.Event, lag, sinceRead time.Duration) {
			if ev.Action != "die" {
				return
			}
			mu.Lock()
			lags = append(lags, lag)
			reads = append(reads, sinceRead)
			times = append(times, time.Now())
			mu.Unlock()
		})
	})
	gs := e.startMany("bench", games)
	reset := func() {
		mu.Lock()
		lags, reads, times = lags[:0], reads[:0], times[:0]
		mu.Unlock()
	}
	collected := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(lags)
	}
	startAll := func() {
		var g errgroup.Group
		g.SetLimit(8)
		for _, gm := range gs {
			g.Go(func() error { return e.eng.StartContainer(e.ctx, gm.c.ID) })
		}
		if err := g.Wait(); err != nil {
			b.Fatal(err)
		}
		for _, gm := range gs {
			e.waitStatus(gm.id, runtime.StatusRunning)
		}
	}
	pool := e.store.Pool()
	var commits []time.Duration
	var p50s, p99s, readP50s, readP99s, deliveryP99s, rates []float64

	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		if i > 0 {
			startAll()
		}
		reset()
		b.StartTimer()

		// Paced: one kill every 1/rate.
		tick := time.NewTicker(time.Second / rate)
		var kills sync.WaitGroup
		for _, gm := range gs {
			<-tick.C
			kills.Add(1)
			go func() {
				defer kills.Done()
				_, _ = e.raw.ContainerKill(context.Background(), gm.c.ID, client.ContainerKillOptions{Signal: "SIGKILL"})
			}()
		}
		tick.Stop()
		kills.Wait()
		wait.For(b, 2*time.Minute, "paced dies applied", func() bool { return collected() >= games })
		mu.Lock()
		sorted, sortedReads := slices.Clone(lags), slices.Clone(reads)
		mu.Unlock()
		slices.Sort(sorted)
		slices.Sort(sortedReads)
		p50s = append(p50s, ms(sorted[len(sorted)/2]))
		p99s = append(p99s, ms(sorted[len(sorted)*99/100]))
		readP50s = append(readP50s, ms(sortedReads[len(sortedReads)/2]))
		readP99s = append(readP99s, ms(sortedReads[len(sortedReads)*99/100]))
		mu.Lock()
		var delivery []time.Duration
		for j := range lags {
			delivery = append(delivery, lags[j]-reads[j])
		}
		mu.Unlock()
		slices.Sort(delivery)
		deliveryP99s = append(deliveryP99s, ms(delivery[len(delivery)*99/100]))

		// Burst: all die at once; rate = dies / (last commit - first kill).
		b.StopTimer()
		startAll()
		reset()
		b.StartTimer()
		begin := time.Now()
		e.killAll(gs)
		wait.For(b, 2*time.Minute, "burst dies applied", func() bool { return collected() >= games })
		mu.Lock()
		last := slices.MaxFunc(times, func(x, y time.Time) int { return x.Compare(y) })
		mu.Unlock()
		rates = append(rates, float64(games)/last.Sub(begin).Seconds())

		// Baseline: raw commits.
		for range 200 {
			t := time.Now()
			err := pgx.BeginFunc(e.ctx, pool, func(tx pgx.Tx) error {
				_, err := tx.Exec(e.ctx, "UPDATE hosts SET heartbeat_at = now() WHERE host_id = $1", e.hostID)
				return err
			})
			if err != nil {
				b.Fatal(err)
			}
			commits = append(commits, time.Since(t))
		}
	}
	b.StopTimer()
	slices.Sort(commits)
	b.ReportMetric(mean(p50s), "p50-ms")
	b.ReportMetric(mean(p99s), "p99-ms")
	b.ReportMetric(mean(readP50s), "read-to-commit-p50-ms")
	b.ReportMetric(mean(readP99s), "read-to-commit-p99-ms")
	b.ReportMetric(mean(deliveryP99s), "event-to-read-p99-ms")
	b.ReportMetric(mean(rates), "docker-burst-dies/s")
	b.ReportMetric(ms(commits[len(commits)/2]), "raw-commit-p50-ms")
	b.ReportMetric(ms(commits[len(commits)*99/100]), "raw-commit-p99-ms")
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func mean(xs []float64) float64 {
	var s float64
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

// fakeDocker is an engine whose events the benchmark writes: it isolates
// the watcher's own pipeline (buffer, Map, one transaction per event,
// cursor) from the daemon's cost of killing containers.
type fakeDocker struct {
	engine.Engine // nil: the other methods are not called
	events        chan engine.Event
	containers    []engine.Container

	pingFail  atomic.Bool
	pings     atomic.Int64
	subs      atomic.Int64
	endStream chan struct{} // a send ends the current stream with ErrStreamEnded
}

func (f *fakeDocker) Ping(context.Context) error {
	f.pings.Add(1)
	if f.pingFail.Load() {
		return errors.New("fake daemon down")
	}
	return nil
}
func (f *fakeDocker) ListManaged(context.Context) ([]engine.Container, error) {
	return f.containers, nil
}
func (f *fakeDocker) InspectContainer(_ context.Context, id string) (engine.Container, error) {
	for _, c := range f.containers {
		if c.ID == id {
			return c, nil
		}
	}
	return engine.Container{}, engine.ErrNotFound
}
func (f *fakeDocker) Events(ctx context.Context, _ engine.EventsOptions, handle func(engine.Event)) error {
	f.subs.Add(1)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-f.endStream:
			return engine.ErrStreamEnded
		case ev := <-f.events:
			handle(ev)
		}
	}
}

// BenchmarkEventToCommit measures the watcher's pipeline against the real
// PostgreSQL store with events written by the benchmark (die and start in
// turn on 100 running games, each a transition): p50/p99 latency from the
// event's time to its commit at a steady 200 events/s, and the sustained
// rate when events arrive as fast as they are applied. The raw cost of one
// PostgreSQL commit is measured in the same run.
func BenchmarkEventToCommit(b *testing.B) {
	const (
		games  = 100
		rate   = 200
		paced  = 1000 // events in the paced phase
		burst  = 4000 // events in the sustained phase
		hostID = "bench-host"
	)
	e := &env{t: b, ctx: context.Background(), hostID: hostID, store: newBenchStore(b), image: "engine:1"}
	if _, err := e.store.RegisterHost(e.ctx, hostID, "agent", "bench"); err != nil {
		b.Fatal(err)
	}
	fake := &fakeDocker{events: make(chan engine.Event)}
	state := make([]bool, games) // running?
	for i := range games {
		g := game{id: fmt.Sprintf("g%03d", i), statePath: "/state", c: engine.Container{ID: fmt.Sprintf("c%03d", i), State: "running"}}
		e.record(g)
		fake.containers = append(fake.containers, g.c)
		state[i] = true
	}
	e.rec = reconcile.New(e.store, fake, reconcile.Config{HostID: hostID, OrphanGrace: -1, Logger: slog.New(slog.DiscardHandler)})
	var (
		mu      sync.Mutex
		lags    []time.Duration
		applied int
	)
	w := watcher.New(e.store, fake, e.rec, nil, watcher.Config{HostID: hostID, BufferSize: 8192, Logger: slog.New(slog.DiscardHandler)})
	watcher.SetAppliedHook(w, func(_ engine.Event, lag, _ time.Duration) {
		mu.Lock()
		lags = append(lags, lag)
		applied++
		mu.Unlock()
	})
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() { cancel(); <-done }()
	wait.For(b, time.Minute, "connected", w.Connected)

	next := 0
	emit := func() {
		i := next % games
		next++
		action := "die"
		if !state[i] {
			action = "start"
		}
		state[i] = !state[i]
		fake.events <- engine.Event{
			ID: fmt.Sprintf("c%03d", i), Action: action, TimeNano: time.Now().UnixNano(),
			Attributes: map[string]string{engine.LabelManaged: "true", engine.LabelHost: hostID,
				engine.LabelGame: fmt.Sprintf("g%03d", i), "exitCode": "0"},
		}
	}
	waitApplied := func(n int) {
		wait.For(b, 2*time.Minute, "events applied", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return applied >= n
		})
	}
	var p50s, p99s, rates []float64
	var commits []time.Duration
	b.ResetTimer()
	for range b.N {
		mu.Lock()
		lags, applied = lags[:0], 0
		mu.Unlock()
		tick := time.NewTicker(time.Second / rate)
		for range paced {
			<-tick.C
			emit()
		}
		tick.Stop()
		waitApplied(paced)
		mu.Lock()
		sorted := slices.Clone(lags)
		lags, applied = lags[:0], 0
		mu.Unlock()
		slices.Sort(sorted)
		p50s = append(p50s, ms(sorted[len(sorted)/2]))
		p99s = append(p99s, ms(sorted[len(sorted)*99/100]))

		begin := time.Now()
		for range burst {
			emit()
		}
		waitApplied(burst)
		rates = append(rates, burst/time.Since(begin).Seconds())

		for range 500 {
			t := time.Now()
			err := pgx.BeginFunc(e.ctx, e.store.Pool(), func(tx pgx.Tx) error {
				_, err := tx.Exec(e.ctx, "UPDATE hosts SET heartbeat_at = now() WHERE host_id = $1", hostID)
				return err
			})
			if err != nil {
				b.Fatal(err)
			}
			commits = append(commits, time.Since(t))
		}
	}
	b.StopTimer()
	slices.Sort(commits)
	b.ReportMetric(mean(p50s), "p50-ms")
	b.ReportMetric(mean(p99s), "p99-ms")
	b.ReportMetric(mean(rates), "sustained-events/s")
	b.ReportMetric(ms(commits[len(commits)/2]), "raw-commit-p50-ms")
	b.ReportMetric(ms(commits[len(commits)*99/100]), "raw-commit-p99-ms")
	if s := w.Stats(); s.Overflows != 0 || s.Errors != 0 {
		b.Fatalf("stats %+v", s)
	}
}

func newBenchStore(b testing.TB) *db.Store { return db.NewStore(pgtest.Pool(b), nil) }
