package worker

import (
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// BenchmarkJobMetrics times the measurements the worker makes per job
// (pickup, duration, outcome, and its share of a claim's count, here a
// claim of 100) under the SDK's meter provider, as the agent runs it (a
// manual reader standing in for Prometheus').
func BenchmarkJobMetrics(b *testing.B) {
	otel.SetMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader())))
	m := newMetrics()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for i := 0; pb.Next(); i++ {
			if i%100 == 0 {
				m.claimed("stop", 100)
			}
			m.pickup("stop", time.Millisecond)
			m.duration("stop", 2*time.Millisecond)
			m.outcome("stop", "succeeded")
		}
	})
}
