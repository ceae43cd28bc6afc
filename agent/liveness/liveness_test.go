package liveness_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/galaxy/rtmanager/agent/liveness"
	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/testutil/pgtest"
	"github.com/galaxy/rtmanager/internal/testutil/wait"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func hostState(t *testing.T, s *db.Store, hostID string, threshold time.Duration) db.HostLiveness {
	t.Helper()
	hosts, err := s.ListHostsWithLiveness(context.Background(), threshold)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hosts {
		if h.HostID == hostID {
			return h
		}
	}
	t.Fatalf("host %s not listed", hostID)
	return db.HostLiveness{}
}

func TestHeartbeaterKeepsTheHostUpUntilTakenOver(t *testing.T) {
	t.Parallel()
	s := db.NewStore(pgtest.Pool(t), nil)
	ctx := context.Background()
	if _, err := s.RegisterHost(ctx, "host-a", "agent-1", "test"); err != nil {
		t.Fatal(err)
	}
	// The agent was away: its host is down.
	if _, err := s.Pool().Exec(ctx, "UPDATE hosts SET heartbeat_at = now() - interval '1 hour'"); err != nil {
		t.Fatal(err)
	}
	if !hostState(t, s, "host-a", time.Minute).Down {
		t.Fatal("host with an hour-old heartbeat is not down")
	}

	h, err := liveness.NewHeartbeater(s, "host-a", "agent-1", 20*time.Millisecond, slog.New(slog.NewTextHandler(t.Output(), nil)))
	if err != nil {
		t.Fatal(err)
	}
	if !h.LastBeat().IsZero() {
		t.Fatal("last beat before the first")
	}
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	wait.For(t, 30*time.Second, "the host to be up", func() bool {
		return !hostState(t, s, "host-a", time.Minute).Down && !h.LastBeat().IsZero()
	})
	// It keeps beating.
	first := hostState(t, s, "host-a", time.Minute).HeartbeatAt
	wait.For(t, 30*time.Second, "a later heartbeat", func() bool {
		return hostState(t, s, "host-a", time.Minute).HeartbeatAt.After(first)
	})

	// Another agent registers for the host: this one must stop.
	if _, err := s.RegisterHost(ctx, "host-a", "agent-2", "test"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, db.ErrHostTaken) {
			t.Fatalf("Run after a takeover: want ErrHostTaken, got %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Run went on after another agent registered for the host")
	}
}

func TestHeartbeaterStopsWithItsContext(t *testing.T) {
	t.Parallel()
	s := db.NewStore(pgtest.Pool(t), nil)
	if _, err := s.RegisterHost(context.Background(), "host-a", "agent-1", "test"); err != nil {
		t.Fatal(err)
	}
	h, err := liveness.NewHeartbeater(s, "host-a", "agent-1", time.Hour, slog.New(slog.NewTextHandler(t.Output(), nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	// The first beat is immediate, not an interval later.
	wait.For(t, 30*time.Second, "the first beat", func() bool { return !h.LastBeat().IsZero() })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after cancel: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Run did not return after cancel")
	}
}

func TestNewHeartbeaterRefusesBadSettings(t *testing.T) {
	t.Parallel()
	if _, err := liveness.NewHeartbeater(nil, "", "a", 0, nil); err == nil {
		t.Fatal("bad settings accepted")
	}
	if got := liveness.DefaultThreshold(10 * time.Second); got != 30*time.Second {
		t.Fatalf("default threshold: %s", got)
	}
}
