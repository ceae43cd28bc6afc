package worker

import (
	"context"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/galaxy/rtmanager/agent/telemetry"
	"github.com/galaxy/rtmanager/internal/db"
)

var tracer = otel.Tracer("github.com/galaxy/rtmanager/agent/worker")

// jobSpan starts the span of one attempt of j. When the Game Master wrote a
// W3C traceparent into the job, the span continues that trace, so one trace
// runs from the Game Master's insert to the container; otherwise it starts a
// new trace. The claim, already done, is recorded as a child with its own
// times.
func (w *Worker) jobSpan(j db.Job, claimSent, claimDone time.Time) (context.Context, trace.Span) {
	parent := context.Background()
	if j.Traceparent != "" {
		parent = propagation.TraceContext{}.Extract(parent, propagation.MapCarrier{"traceparent": j.Traceparent})
	}
	ctx, span := tracer.Start(parent, "job "+kindAttr(j.Kind),
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithTimestamp(claimSent),
		trace.WithAttributes(
			telemetry.JobID(j.ID), telemetry.JobKind(kindAttr(j.Kind)), telemetry.GameID(j.GameID),
			telemetry.HostID(j.HostID), attribute.Int("rtmanager.job.attempt", j.Attempt)))
	_, claim := tracer.Start(ctx, "claim", trace.WithTimestamp(claimSent))
	claim.End(trace.WithTimestamp(claimDone))
	return ctx, span
}

// commitSpan starts the span of writing an attempt's outcome, under the
// job's span; the store's statements are its children.
func commitSpan(ctx context.Context, r *running, what string) (context.Context, trace.Span) {
	return tracer.Start(trace.ContextWithSpan(ctx, r.span), "commit "+what)
}

// endSpan ends a span, marking it failed when err is set.
func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
