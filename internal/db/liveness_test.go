package db_test

import (
	"context"
	"testing"
	"time"

	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/domain/job"
)

func TestHostLivenessThresholdMarksHostDown(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	for _, h := range []string{"host-a", "host-b"} {
		if _, err := s.RegisterHost(ctx, h, "agent-"+h, "test"); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if _, _, err := s.InsertJob(ctx, db.NewJob{HostID: "host-a", GameID: "g1", Kind: job.KindStop}); err != nil {
			t.Fatal(err)
		}
	}
	// host-a's agent has not beaten for ten minutes.
	if _, err := s.Pool().Exec(ctx, "UPDATE hosts SET heartbeat_at = now() - interval '10 minutes' WHERE host_id = 'host-a'"); err != nil {
		t.Fatal(err)
	}

	hosts, err := s.ListHostsWithLiveness(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(hosts) != 2 || hosts[0].HostID != "host-a" || hosts[1].HostID != "host-b" {
		t.Fatalf("hosts: %+v", hosts)
	}
	if a := hosts[0]; !a.Down || a.QueuedJobs != 2 || a.HeartbeatAge() < 10*time.Minute {
		t.Fatalf("host-a: want down with 2 queued jobs and an old heartbeat, got %+v (age %s)", a, a.HeartbeatAge())
	}
	if b := hosts[1]; b.Down || b.QueuedJobs != 0 {
		t.Fatalf("host-b: want up with no queued jobs, got %+v", b)
	}
	// With a threshold longer than its silence, host-a is up.
	if hosts, err := s.ListHostsWithLiveness(ctx, time.Hour); err != nil || hosts[0].Down {
		t.Fatalf("threshold 1h: %+v %v", hosts, err)
	}
	// A heartbeat brings it back.
	if err := s.Heartbeat(ctx, "host-a", "agent-host-a"); err != nil {
		t.Fatal(err)
	}
	if hosts, err := s.ListHostsWithLiveness(ctx, time.Minute); err != nil || hosts[0].Down {
		t.Fatalf("after a heartbeat: %+v %v", hosts, err)
	}
	if _, err := s.ListHostsWithLiveness(ctx, 0); err == nil {
		t.Fatal("a zero threshold was accepted")
	}
}

// TestJobsOfADownHostStayQueued: claims are by host id, so another host's
// agent never takes a down host's jobs.
func TestJobsOfADownHostStayQueued(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	for _, h := range []string{"host-a", "host-b"} {
		if _, err := s.RegisterHost(ctx, h, "agent-"+h, "test"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Pool().Exec(ctx, "UPDATE hosts SET heartbeat_at = now() - interval '1 hour' WHERE host_id = 'host-a'"); err != nil {
		t.Fatal(err)
	}
	down, _, err := s.InsertJob(ctx, db.NewJob{HostID: "host-a", GameID: "g1", Kind: job.KindStart})
	if err != nil {
		t.Fatal(err)
	}
	mine, _, err := s.InsertJob(ctx, db.NewJob{HostID: "host-b", GameID: "g2", Kind: job.KindStart})
	if err != nil {
		t.Fatal(err)
	}
	hosts, err := s.ListHostsWithLiveness(ctx, time.Minute)
	if err != nil || !hosts[0].Down || hosts[1].Down {
		t.Fatalf("liveness: %+v %v", hosts, err)
	}

	claimed, err := s.ClaimJobs(ctx, "host-b", "agent-host-b", 100, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(claimed) != 1 || claimed[0].ID != mine.ID {
		t.Fatalf("host-b claimed %v, want only its own job %d", jobIDs(claimed), mine.ID)
	}
	// Again, once host-b's queue is empty: still nothing of host-a's.
	if more, err := s.ClaimJobs(ctx, "host-b", "agent-host-b", 100, time.Minute); err != nil || len(more) != 0 {
		t.Fatalf("host-b claimed %v (err %v)", jobIDs(more), err)
	}
	j, err := s.GetJob(ctx, down.ID)
	if err != nil || j.Status != job.StatusQueued || j.LeaseOwner != "" {
		t.Fatalf("the down host's job: %+v %v", j, err)
	}
	if hosts, err := s.ListHostsWithLiveness(ctx, time.Minute); err != nil || hosts[0].QueuedJobs != 1 {
		t.Fatalf("liveness after claims: %+v %v", hosts, err)
	}
}
