package worker

import (
	"context"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/galaxy/rtmanager/agent/telemetry"
	"github.com/galaxy/rtmanager/internal/db"
)

// BenchmarkJobSpans times the spans of one job as the worker makes them
// (the attempt's, its claim's and its commit's), under the SDK's provider
// as the agent sets it up: recording nothing when no exporter is set, and
// recording (here for no processor) when one is. "made-anyway" is the
// baseline of the first: the attributes and child spans made whether or
// not the job's span is recorded, as the worker did before bf28c96.
func BenchmarkJobSpans(b *testing.B) {
	for _, c := range []struct {
		name    string
		sampler sdktrace.Sampler
		always  bool
	}{
		{"not-recorded", sdktrace.NeverSample(), false},
		{"not-recorded/made-anyway", sdktrace.NeverSample(), true},
		{"recorded", sdktrace.AlwaysSample(), false},
	} {
		b.Run(c.name, func(b *testing.B) {
			tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(c.sampler))
			defer tp.Shutdown(context.Background())
			w := &Worker{tracer: tp.Tracer(tracerName)}
			j := db.Job{ID: 1, HostID: "host-1", GameID: "game-1", Kind: "stop", Attempt: 1}
			now := time.Now()
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if c.always {
						spansMadeAnyway(w.tracer, j, now)
						continue
					}
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

// spansMadeAnyway is what the worker did for a job's spans before
// bf28c96, kept as the benchmark's baseline.
func spansMadeAnyway(tracer trace.Tracer, j db.Job, at time.Time) {
	ctx, span := tracer.Start(context.Background(), "job "+kindAttr(j.Kind),
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithTimestamp(at),
		trace.WithAttributes(
			telemetry.JobID(j.ID), telemetry.JobKind(kindAttr(j.Kind)), telemetry.GameID(j.GameID),
			telemetry.HostID(j.HostID), attribute.Int("rtmanager.job.attempt", j.Attempt)))
	_, claim := tracer.Start(ctx, "claim", trace.WithTimestamp(at))
	claim.End(trace.WithTimestamp(at))
	_, commit := tracer.Start(trace.ContextWithSpan(context.Background(), span), "commit succeeded")
	endSpan(commit, nil)
	span.End()
}
