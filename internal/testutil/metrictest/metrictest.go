// Package metrictest reads what OpenTelemetry instruments recorded, for
// tests: it installs a meter provider with a manual reader as the
// process's and collects its data points.
package metrictest

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// Install makes a meter provider with a manual reader otel's global one
// until the test ends, and returns the reader. The provider is the
// process's: a test that uses it must not run in parallel, and
// instruments must be made after it.
func Install(t testing.TB) *sdkmetric.ManualReader {
	t.Helper()
	reader := sdkmetric.NewManualReader()
	prev := otel.GetMeterProvider()
	otel.SetMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)))
	t.Cleanup(func() { otel.SetMeterProvider(prev) })
	return reader
}

// Int64Points collects r and returns its int64 sums' and gauges' data
// points, summed by key(metric name, the point's attributes).
func Int64Points(t testing.TB, r *sdkmetric.ManualReader, key func(name string, attrs attribute.Set) string) map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatalf("collect metrics: %v", err)
	}
	got := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			var points []metricdata.DataPoint[int64]
			switch data := m.Data.(type) {
			case metricdata.Sum[int64]:
				points = data.DataPoints
			case metricdata.Gauge[int64]:
				points = data.DataPoints
			}
			for _, p := range points {
				got[key(m.Name, p.Attributes)] += p.Value
			}
		}
	}
	return got
}
