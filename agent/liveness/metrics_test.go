package liveness_test

import (
	"context"
	"testing"
	"time"

	"github.com/galaxy/rtmanager/agent/liveness"
	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/domain/job"
	"github.com/galaxy/rtmanager/internal/testutil/metrictest"
	"github.com/galaxy/rtmanager/internal/testutil/pgtest"
	"go.opentelemetry.io/otel/attribute"
)

// TestFleetMetrics: a host whose agent is gone shows its queued jobs as
// waiting (live=false) and counts as down; a live host's queue is live.
// (Not parallel: it sets the global meter provider.)
func TestFleetMetrics(t *testing.T) {
	s := db.NewStore(pgtest.Pool(t), nil)
	ctx := context.Background()
	for _, h := range []string{"host-live", "host-dead"} {
		if _, err := s.AcquireHostLease(ctx, h, "agent-"+h, "test", time.Minute); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.InsertJob(ctx, db.NewJob{HostID: h, GameID: "g-" + h, Kind: job.KindStop}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Pool().Exec(ctx, "UPDATE hosts SET lease_expires_at = now() - interval '1 minute' WHERE host_id = 'host-dead'"); err != nil {
		t.Fatal(err)
	}

	reader := metrictest.Install(t)
	unregister, err := liveness.RegisterFleetMetrics(s, func() bool { return true }, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = unregister() }()

	got := metrictest.Int64Points(t, reader, func(name string, attrs attribute.Set) string {
		if h, ok := attrs.Value("host_id"); ok {
			live, _ := attrs.Value("live")
			return name + "/" + h.AsString() + "/" + live.String()
		}
		return name
	})
	want := map[string]int64{
		"rtmanager.fleet.queue_depth/host-live/true":  1,
		"rtmanager.fleet.queue_depth/host-dead/false": 1,
		"rtmanager.fleet.hosts_down":                  1,
		"rtmanager.agent.active":                      1,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %d, want %d (all: %v)", k, got[k], v, got)
		}
	}
}
