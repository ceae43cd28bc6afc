package watcher_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/galaxy/rtmanager/agent/engine"
	"github.com/galaxy/rtmanager/agent/reconcile"
	"github.com/galaxy/rtmanager/agent/watcher"
	"github.com/galaxy/rtmanager/internal/testutil/wait"
)

// TestResubscribes drives the watcher with a fake daemon: a silent stream
// with a failing ping, and a stream that ends, both lead to a new
// subscription (and relist); while the daemon is down the watcher backs off
// instead of spinning.
func TestResubscribes(t *testing.T) {
	t.Parallel()
	hostID := "fake-host"
	store := newBenchStore(t)
	if _, err := store.RegisterHost(context.Background(), hostID, "agent", "test"); err != nil {
		t.Fatal(err)
	}
	fake := &fakeDocker{events: make(chan engine.Event), endStream: make(chan struct{})}
	rec := reconcile.New(store, fake, reconcile.Config{HostID: hostID, Logger: slog.New(slog.DiscardHandler)})
	w := watcher.New(store, fake, rec, nil, watcher.Config{
		HostID: hostID, IdleTimeout: 50 * time.Millisecond, MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		Logger: testLogger(t),
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	// The subscription runs in a goroutine of its own and may be counted
	// a moment after Connected.
	wait.For(t, 10*time.Second, "connected", func() bool { return w.Connected() && fake.subs.Load() == 1 })

	// Silent stream, daemon gone: disconnect, back off, reconnect.
	fake.pingFail.Store(true)
	wait.For(t, 10*time.Second, "disconnected", func() bool { return !w.Connected() })
	subs := fake.subs.Load()
	p0 := fake.pings.Load()
	wait.For(t, 10*time.Second, "a few pings while down", func() bool { return fake.pings.Load() >= p0+5 })
	if got := fake.subs.Load(); got != subs {
		t.Errorf("subscribed %d times while the daemon was down", got-subs)
	}
	fake.pingFail.Store(false)
	wait.For(t, 10*time.Second, "reconnected", func() bool { return w.Connected() && fake.subs.Load() > subs })
	if fake.subs.Load() != subs+1 {
		t.Errorf("subscriptions %d, want %d", fake.subs.Load(), subs+1)
	}

	// A silent stream with a daemon that answers is kept.
	subs = fake.subs.Load()
	p0 = fake.pings.Load()
	wait.For(t, 10*time.Second, "idle pings", func() bool { return fake.pings.Load() >= p0+3 })
	if fake.subs.Load() != subs || !w.Connected() {
		t.Errorf("a quiet but healthy stream was dropped")
	}

	// The stream ends (daemon restart): resubscribe and relist.
	relists := w.Stats().Relists
	fake.endStream <- struct{}{}
	wait.For(t, 10*time.Second, "resubscribed after EOF", func() bool {
		return fake.subs.Load() == subs+1 && w.Connected() && w.Stats().Relists > relists
	})
	if s := w.Stats(); s.Reconnects < 2 {
		t.Errorf("stats %+v", s)
	}
}
