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
	"github.com/galaxy/rtmanager/internal/domain/job"
)

const tracerName = "github.com/galaxy/rtmanager/agent/worker"

// jobSpanNames are the job spans' names by kindAttr, made once: a name
// built per job was an allocation per job whether or not it was recorded.
var jobSpanNames = func() map[string]string {
	names := map[string]string{"unknown": "job unknown"}
	for _, k := range job.AllKinds() {
		names[string(k)] = "job " + string(k)
	}
	return names
}()

// newTracer is the worker's tracer, taken from the global provider when
// the worker is made (as its meters are), so that it is the SDK's own
// tracer rather than the global one's forwarder.
func newTracer() trace.Tracer { return otel.Tracer(tracerName) }

// jobSpan starts the span of one attempt of j. When the Game Master wrote a
// W3C traceparent into the job, the span continues that trace, so one trace
// runs from the Game Master's insert to the container; otherwise it starts a
// new trace. The claim, already done, is recorded as a child with its own
// times.
//
// When the span is not recorded (no exporter, or a trace the sampler left
// out) it only carries ids for the job's logs: its attributes and the
// claim's span are not made, since no sampler records a child of a span
// it did not record (parent-based samplers follow the parent, ratio
// samplers decide by the trace id the child shares).
func (w *Worker) jobSpan(j db.Job, claimSent, claimDone time.Time) (context.Context, trace.Span) {
	parent := context.Background()
	if j.Traceparent != "" {
		parent = propagation.TraceContext{}.Extract(parent, propagation.MapCarrier{"traceparent": j.Traceparent})
	}
	kind := kindAttr(j.Kind)
	ctx, span := w.tracer.Start(parent, jobSpanNames[kind],
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithTimestamp(claimSent))
	if span.IsRecording() {
		span.SetAttributes(
			telemetry.JobID(j.ID), telemetry.JobKind(kind), telemetry.GameID(j.GameID),
			telemetry.HostID(j.HostID), attribute.Int("rtmanager.job.attempt", j.Attempt))
		_, claim := w.tracer.Start(ctx, "claim", trace.WithTimestamp(claimSent))
		claim.End(trace.WithTimestamp(claimDone))
	}
	return ctx, span
}

// commitSpan starts the span of writing an attempt's outcome, under the
// job's span; the store's statements are its children. Under a job's span
// that is not recorded it makes none (see jobSpan): the context carries
// the job's span, and the span returned is a no-op.
func (w *Worker) commitSpan(ctx context.Context, r *running, what string) (context.Context, trace.Span) {
	ctx = trace.ContextWithSpan(ctx, r.span)
	if !r.span.IsRecording() {
		return ctx, noSpan
	}
	return w.tracer.Start(ctx, "commit "+what)
}

// noSpan is a span that does nothing (the no-op span of a context without
// one).
var noSpan = trace.SpanFromContext(context.Background())

// endSpan ends a span, marking it failed when err is set.
func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
