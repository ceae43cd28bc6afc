package leader_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/galaxy/rtmanager/agent/leader"
	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/testutil/pgtest"
	"github.com/galaxy/rtmanager/internal/testutil/wait"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// Short, but with room for a noisy machine: renew every 500 ms, fence
// after 1.6 s without a renewal.
func cfg(t *testing.T, agent string) leader.Config {
	return leader.Config{
		HostID: "host-a", AgentID: agent, Version: "test",
		TTL: 2 * time.Second, PollInterval: 100 * time.Millisecond,
		RenewInterval: 500 * time.Millisecond, Margin: 400 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(t.Output(), nil)).With("agent", agent),
	}
}

// flaky is a store whose renewals fail while broken is set: a lost
// database connection, as the active agent sees it.
type flaky struct {
	*db.Store
	broken atomic.Bool
}

func (f *flaky) RenewHostLease(ctx context.Context, hostID, agentID string, ttl time.Duration) error {
	if f.broken.Load() {
		return errors.New("connection refused (injected)")
	}
	return f.Store.RenewHostLease(ctx, hostID, agentID, ttl)
}

func (f *flaky) AcquireHostLease(ctx context.Context, hostID, agentID, version string, ttl time.Duration) (db.HostLease, error) {
	if f.broken.Load() {
		return db.HostLease{}, errors.New("connection refused (injected)")
	}
	return f.Store.AcquireHostLease(ctx, hostID, agentID, version, ttl)
}

// log records who worked when; it fails the test when two agents work at
// once.
type log struct {
	t       *testing.T
	mu      sync.Mutex
	working string
	events  []string
}

func (l *log) work(agent string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		l.mu.Lock()
		if l.working != "" {
			l.t.Errorf("%s started working while %s still works", agent, l.working)
		}
		l.working = agent
		l.events = append(l.events, "start "+agent)
		l.mu.Unlock()
		<-ctx.Done()
		l.mu.Lock()
		l.working = ""
		l.events = append(l.events, "stop "+agent)
		l.mu.Unlock()
		return ctx.Err()
	}
}

func (l *log) snapshot() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.events...)
}

func run(ctx context.Context, l *leader.Lease, work func(context.Context) error) chan error {
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx, work) }()
	return done
}

// TestStandbyWaitsThenTakesOverAtRelease: a second agent for the host never
// works while the first holds the lease, and takes over when the first
// stops cleanly.
func TestStandbyWaitsThenTakesOverAtRelease(t *testing.T) {
	t.Parallel()
	store := db.NewStore(pgtest.Pool(t), nil)
	rec := &log{t: t}
	a := leader.New(store, cfg(t, "a"))
	actx, stopA := context.WithCancel(context.Background())
	defer stopA()
	aDone := run(actx, a, rec.work("a"))
	wait.For(t, 10*time.Second, "a active", a.Active)

	b := leader.New(store, cfg(t, "b"))
	bctx, stopB := context.WithCancel(context.Background())
	defer stopB()
	bDone := run(bctx, b, rec.work("b"))
	// Several renewals of a, and as many polls of b, pass: b stays standby.
	wait.For(t, 10*time.Second, "a renewing", func() bool { return a.Stats().Renewals >= 4 })
	if b.Active() || b.Stats().Terms != 0 {
		t.Fatalf("b became active while a held the lease: %+v", b.Stats())
	}
	if a.Stats().Fences != 0 {
		t.Fatalf("a fenced itself: %+v", a.Stats())
	}

	stopA()
	if err := <-aDone; err != nil {
		t.Fatalf("a: %v", err)
	}
	wait.For(t, 10*time.Second, "b active after a released", b.Active)
	stopB()
	if err := <-bDone; err != nil {
		t.Fatalf("b: %v", err)
	}
	if got := rec.snapshot(); len(got) != 4 || got[0] != "start a" || got[1] != "stop a" || got[2] != "start b" || got[3] != "stop b" {
		t.Fatalf("work: %v", got)
	}
}

// TestFencedBeforeTakeover: the active agent loses its database; it stops
// working on its own before the standby can take over, and comes back as a
// standby once the database answers again.
func TestFencedBeforeTakeover(t *testing.T) {
	t.Parallel()
	store := db.NewStore(pgtest.Pool(t), nil)
	rec := &log{t: t}
	fa := &flaky{Store: store}
	a := leader.New(fa, cfg(t, "a"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	aDone := run(ctx, a, rec.work("a"))
	wait.For(t, 10*time.Second, "a active", a.Active)
	b := leader.New(store, cfg(t, "b"))
	bDone := run(ctx, b, rec.work("b"))
	wait.For(t, 10*time.Second, "a renewing", func() bool { return a.Stats().Renewals >= 1 })

	fa.broken.Store(true)
	// Active is set just before the work function is called.
	wait.For(t, 20*time.Second, "b active and working", func() bool { return b.Active() && len(rec.snapshot()) >= 3 })
	if s := a.Stats(); s.Fences != 1 || s.RenewFailures == 0 {
		t.Fatalf("a: want one fence after failed renewals, got %+v", s)
	}
	// a stopped before b started (log.work fails the test otherwise).
	if got := rec.snapshot(); len(got) < 3 || got[0] != "start a" || got[1] != "stop a" || got[2] != "start b" {
		t.Fatalf("work: %v", got)
	}
	// Back to standby, a stays out while b holds the lease.
	fa.broken.Store(false)
	wait.For(t, 10*time.Second, "b renewing", func() bool { return b.Stats().Renewals >= 3 })
	if a.Active() || a.Stats().Terms != 1 {
		t.Fatalf("a active again while b holds the lease: %+v", a.Stats())
	}
	cancel()
	for _, done := range []chan error{aDone, bDone} {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

// TestFencedAtOnceWhenLeaseTaken: a renewal that finds the lease gone
// fences without waiting for the margin.
func TestFencedAtOnceWhenLeaseTaken(t *testing.T) {
	t.Parallel()
	store := db.NewStore(pgtest.Pool(t), nil)
	rec := &log{t: t}
	c := cfg(t, "a")
	c.TTL, c.RenewInterval, c.Margin = time.Minute, 100*time.Millisecond, 10*time.Second
	a := leader.New(store, c)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	aDone := run(ctx, a, rec.work("a"))
	wait.For(t, 10*time.Second, "a active", a.Active)
	if _, err := store.Pool().Exec(ctx, "UPDATE hosts SET agent_id = 'intruder' WHERE host_id = 'host-a'"); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "a fenced", func() bool { return a.Stats().Fences == 1 && !a.Active() })
	cancel()
	if err := <-aDone; err != nil {
		t.Fatal(err)
	}
}

// TestWorkErrorReleases: a part of the agent that fails ends Run with its
// error and frees the lease for a standby.
func TestWorkErrorReleases(t *testing.T) {
	t.Parallel()
	store := db.NewStore(pgtest.Pool(t), nil)
	boom := errors.New("boom")
	a := leader.New(store, cfg(t, "a"))
	if err := a.Run(context.Background(), func(context.Context) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("Run: %v", err)
	}
	if _, err := store.AcquireHostLease(context.Background(), "host-a", "b", "v", time.Minute); err != nil {
		t.Fatalf("lease not released: %v", err)
	}
	if err := leader.New(store, leader.Config{HostID: "h", AgentID: "x", TTL: time.Second, RenewInterval: time.Second}).Run(context.Background(), nil); err == nil {
		t.Fatal("a renew interval longer than ttl-margin was accepted")
	}
}
