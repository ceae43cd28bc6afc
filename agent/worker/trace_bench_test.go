package worker

import (
	"context"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/galaxy/rtmanager/internal/db"
)

// BenchmarkJobSpans times the spans of one job as the worker makes them
// (the attempt's, its claim's and its commit's), under the SDK's provider
// as the agent sets it up: recording nothing when no exporter is set, and
// recording (here for no processor) when one is.
func BenchmarkJobSpans(b *testing.B) {
	for name, sampler := range map[string]sdktrace.Sampler{
		"not-recorded": sdktrace.NeverSample(),
		"recorded":     sdktrace.AlwaysSample(),
	} {
		b.Run(name, func(b *testing.B) {
			tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sampler))
			defer tp.Shutdown(context.Background())
			w := &Worker{tracer: tp.Tracer(tracerName)}
			j := db.Job{ID: 1, HostID: "host-1", GameID: "game-1", Kind: "stop", Attempt: 1}
			now := time.Now()
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					_, span := w.jobSpan(j, now, now)
					r := &running{job: j, span: span}
					_, commit := w.commitSpan(context.Background(), r, "succeeded")
					endSpan(commit, nil)
					span.End()
				}
			})
		})
	}
}
