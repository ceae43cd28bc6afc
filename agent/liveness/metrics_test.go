package liveness_test

import (
	"context"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/galaxy/rtmanager/agent/liveness"
	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/domain/job"
	"github.com/galaxy/rtmanager/internal/testutil/pgtest"
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

	reader := sdkmetric.NewManualReader()
	prev := otel.GetMeterProvider()
	otel.SetMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)))
	t.Cleanup(func() { otel.SetMeterProvider(prev) })
	unregister, err := liveness.RegisterFleetMetrics(s, func() bool { return true }, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = unregister() }()

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			g, ok := m.Data.(metricdata.Gauge[int64])
			if !ok {
				continue
			}
			for _, p := range g.DataPoints {
				key := m.Name
				if h, ok := p.Attributes.Value("host_id"); ok {
					live, _ := p.Attributes.Value("live")
					key += "/" + h.AsString() + "/" + live.String()
				}
				got[key] = p.Value
			}
		}
	}
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
