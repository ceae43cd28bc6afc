package worker_test

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/galaxy/rtmanager/agent/worker"
	"github.com/galaxy/rtmanager/internal/domain/job"
)

// TestMetricsCountJobsByKind: the claims are counted once per kind and
// claim, yet add up to the jobs of each kind, and every outcome is
// counted. Not parallel: the meter provider is the process's.
func TestMetricsCountJobsByKind(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	otel.SetMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)))
	s := newStore(t)
	var ids []int64
	for i, kind := range []string{"stop", "remove", "stop", "stop", "remove"} {
		ids = append(ids, insert(t, s, "g-metrics-"+string(rune('a'+i)), kind, `{}`, 0))
	}
	w := worker.New(s, worker.Noop, testConfig("owner-1"))
	stop := startWorker(t, w)
	for _, id := range ids {
		waitStatus(t, s, id, job.StatusSucceeded)
	}
	stop()

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	sums := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			data, ok := m.Data.(metricdata.Sum[int64])
			if !ok {
				continue
			}
			for _, dp := range data.DataPoints {
				kind, _ := dp.Attributes.Value(attribute.Key("kind"))
				outcome, _ := dp.Attributes.Value(attribute.Key("outcome"))
				sums[m.Name+" "+kind.AsString()+" "+outcome.AsString()] += dp.Value
			}
		}
	}
	want := map[string]int64{
		"rtmanager.worker.jobs.claimed stop ":            3,
		"rtmanager.worker.jobs.claimed remove ":          2,
		"rtmanager.worker.jobs.outcome stop succeeded":   3,
		"rtmanager.worker.jobs.outcome remove succeeded": 2,
	}
	for k, v := range want {
		if sums[k] != v {
			t.Errorf("%s = %d, want %d (all: %v)", k, sums[k], v, sums)
		}
	}
}
