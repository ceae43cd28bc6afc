package db_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/domain/job"
)

func TestHostLeaseIsExclusive(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()

	l, err := s.AcquireHostLease(ctx, "host-a", "agent-1", "v1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if l.AgentID != "agent-1" || l.ExpiresAt.Before(time.Now().Add(30*time.Second)) {
		t.Fatalf("lease: %+v", l)
	}
	// Another agent is refused while the lease lives; its holder may
	// acquire it again (a restart of the same process) and renew it.
	if _, err := s.AcquireHostLease(ctx, "host-a", "agent-2", "v1", time.Minute); !errors.Is(err, db.ErrLeaseHeld) {
		t.Fatalf("second agent: want ErrLeaseHeld, got %v", err)
	}
	if _, err := s.AcquireHostLease(ctx, "host-a", "agent-1", "v1", time.Minute); err != nil {
		t.Fatalf("holder again: %v", err)
	}
	if err := s.RenewHostLease(ctx, "host-a", "agent-1", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := s.RenewHostLease(ctx, "host-a", "agent-2", time.Minute); !errors.Is(err, db.ErrLeaseHeld) {
		t.Fatalf("renew by a non-holder: want ErrLeaseHeld, got %v", err)
	}

	// Expired: the holder can no longer renew, another agent takes it.
	if _, err := s.Pool().Exec(ctx, "UPDATE hosts SET lease_expires_at = now() - interval '1 second' WHERE host_id = 'host-a'"); err != nil {
		t.Fatal(err)
	}
	if err := s.RenewHostLease(ctx, "host-a", "agent-1", time.Minute); !errors.Is(err, db.ErrLeaseHeld) {
		t.Fatalf("renew after expiry: want ErrLeaseHeld, got %v", err)
	}
	if down, err := s.FleetHostsDown(ctx); err != nil || down != 1 {
		t.Fatalf("hosts down with an expired lease: %d %v", down, err)
	}
	l2, err := s.AcquireHostLease(ctx, "host-a", "agent-2", "v2", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if l2.AgentID != "agent-2" || l2.AgentVersion != "v2" || !l2.StartedAt.After(l.StartedAt) {
		t.Fatalf("taken over: %+v (before %+v)", l2, l)
	}

	// Released: free at once; a release by a non-holder changes nothing.
	if ok, err := s.ReleaseHostLease(ctx, "host-a", "agent-1"); err != nil || ok {
		t.Fatalf("release by a non-holder: %v %v", ok, err)
	}
	if ok, err := s.ReleaseHostLease(ctx, "host-a", "agent-2"); err != nil || !ok {
		t.Fatalf("release: %v %v", ok, err)
	}
	if _, err := s.AcquireHostLease(ctx, "host-a", "agent-3", "v2", time.Minute); err != nil {
		t.Fatalf("after release: %v", err)
	}
}

// TestHostLeaseRace: of many agents acquiring a free lease at once,
// exactly one gets it.
func TestHostLeaseRace(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = s.AcquireHostLease(ctx, "host-r", "agent-"+string(rune('a'+i)), "v", time.Minute)
		}()
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, db.ErrLeaseHeld):
			t.Fatal(err)
		}
	}
	if won != 1 {
		t.Fatalf("%d agents acquired the lease, want 1", won)
	}
}

func TestFleetQueueDepth(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	if _, err := s.AcquireHostLease(ctx, "host-a", "agent-a", "v", time.Minute); err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"host-a", "host-a", "host-z"} {
		if _, _, err := s.InsertJob(ctx, db.NewJob{HostID: h, GameID: "g-" + h, Kind: job.KindStop}); err != nil {
			t.Fatal(err)
		}
	}
	q, err := s.FleetQueueDepth(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []db.HostQueue{{HostID: "host-a", Queued: 2, Live: true}, {HostID: "host-z", Queued: 1, Live: false}}
	if len(q) != 2 || q[0] != want[0] || q[1] != want[1] {
		t.Fatalf("queue depth: got %+v, want %+v", q, want)
	}
}
