package executor_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/galaxy/rtmanager/internal/domain/job"
	"github.com/galaxy/rtmanager/internal/testutil/wait"
)

// TestOneTraceFromInsertToContainer inserts a start job carrying the W3C
// traceparent of a Game Master span, and checks that the agent's work for
// it — the job, its claim, every Docker call and the commit — lands in
// that one trace, each span under the job's.
func TestOneTraceFromInsertToContainer(t *testing.T) {
	tp, spans := tracing()

	e := newEnv(t) // its Docker client now traces with tp
	e.run()

	gmCtx, gmSpan := tp.Tracer("game-master").Start(context.Background(), "enqueue start")
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(gmCtx, carrier)
	gmSpan.End()
	var id int64
	err := e.store.Pool().QueryRow(context.Background(),
		`INSERT INTO jobs (host_id, game_id, kind, payload, traceparent) VALUES ($1, 'traced', 'start', $2::jsonb, $3) RETURNING id`,
		e.hostID, startPayload(e.image), carrier["traceparent"]).Scan(&id)
	if err != nil {
		t.Fatal(err)
	}
	if j := e.finished(id); j.Status != job.StatusSucceeded {
		t.Fatalf("job %s: %s", j.Status, j.LastError)
	}
	// The job's span ends a moment after its commit. The provider is the
	// process's, so other tests' jobs end "job start" spans too: only the
	// one in the Game Master's trace is this job's.
	traceID := gmSpan.SpanContext().TraceID()
	wait.For(t, time.Minute, "the job's span to end", func() bool {
		for _, s := range spans.GetSpans() {
			if s.Name == "job start" && s.SpanContext.TraceID() == traceID {
				return true
			}
		}
		return false
	})

	var inTrace []tracetest.SpanStub
	for _, s := range spans.GetSpans() {
		if s.SpanContext.TraceID() == traceID {
			inTrace = append(inTrace, s)
		}
	}
	byID := map[trace.SpanID]tracetest.SpanStub{}
	for _, s := range inTrace {
		byID[s.SpanContext.SpanID()] = s
	}
	var jobSpan *tracetest.SpanStub
	for i, s := range inTrace {
		if s.Name == "job start" {
			jobSpan = &inTrace[i]
		}
	}
	if jobSpan == nil {
		t.Fatalf("no job span in the Game Master's trace; spans in it: %v", names(inTrace))
	}
	if jobSpan.Parent.SpanID() != gmSpan.SpanContext().SpanID() {
		t.Fatalf("the job span's parent is %s, not the Game Master's span", jobSpan.Parent.SpanID())
	}
	// Every other span of the trace descends from the job span.
	underJob := func(s tracetest.SpanStub) bool {
		for p := s.Parent.SpanID(); p.IsValid(); {
			if p == jobSpan.SpanContext.SpanID() {
				return true
			}
			parent, ok := byID[p]
			if !ok {
				return false
			}
			p = parent.Parent.SpanID()
		}
		return false
	}
	var claims, commits, dockerCalls int
	for _, s := range inTrace {
		if s.Name == "enqueue start" || s.Name == "job start" {
			continue
		}
		if !underJob(s) {
			t.Errorf("span %q is in the trace but not under the job span", s.Name)
		}
		switch {
		case s.Name == "claim":
			claims++
		case s.Name == "commit succeeded":
			commits++
		case s.SpanKind == trace.SpanKindClient:
			dockerCalls++
		}
	}
	t.Logf("spans of the trace: %v", names(inTrace))
	if claims != 1 || commits != 1 || dockerCalls < 2 {
		t.Fatalf("want one claim, one commit and the Docker calls (create, start, …) in the trace; got claims=%d commits=%d docker=%d: %v",
			claims, commits, dockerCalls, names(inTrace))
	}
}

var (
	tracingOnce sync.Once
	tracingTP   *sdktrace.TracerProvider
	tracingExp  *tracetest.InMemoryExporter
)

// tracing installs, once per test binary, a global tracer provider that
// keeps every span in memory. Once: tracers taken from the global
// provider before the first SetTracerProvider follow that first provider
// only, so a test that swapped it in and out would leave the next one
// blind. Tests pick their spans by trace id.
func tracing() (*sdktrace.TracerProvider, *tracetest.InMemoryExporter) {
	tracingOnce.Do(func() {
		tracingExp = tracetest.NewInMemoryExporter()
		tracingTP = sdktrace.NewTracerProvider(sdktrace.WithSyncer(tracingExp))
		otel.SetTracerProvider(tracingTP)
	})
	return tracingTP, tracingExp
}

func names(spans []tracetest.SpanStub) []string {
	out := make([]string, len(spans))
	for i, s := range spans {
		out[i] = s.Name
	}
	return out
}
