package worker_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/galaxy/rtmanager/agent/worker"
	"github.com/galaxy/rtmanager/internal/domain/job"
	"github.com/galaxy/rtmanager/internal/testutil/syncbuf"
	"github.com/galaxy/rtmanager/internal/testutil/wait"
)

// TestJobLogLinesNameTheJob: what the worker logs about a job names it
// (id, game, kind, attempt) and the trace of its attempt, although those
// attributes are made only when a line is written.
func TestJobLogLinesNameTheJob(t *testing.T) {
	t.Parallel()
	// Spans with ids (the agent's provider; nothing exported). The other
	// tests of the package do not look at traces.
	otel.SetTracerProvider(sdktrace.NewTracerProvider())
	s := newStore(t)
	var out syncbuf.Buffer
	traceIDs := make(chan string, 1)
	exec := worker.ExecutorFunc(func(ctx context.Context, task worker.Task) (worker.Result, error) {
		traceIDs <- trace.SpanContextFromContext(ctx).TraceID().String()
		return worker.Result{}, job.Permanent(errors.New("the engine refused"))
	})
	cfg := testConfig("owner-1")
	cfg.Logger = slog.New(slog.NewTextHandler(&out, nil))
	startWorker(t, worker.New(s, exec, cfg))
	id := insert(t, s, "g-logged", "stop", `{}`, 0)
	waitStatus(t, s, id, job.StatusFailed)
	tid := <-traceIDs
	if tid == (trace.TraceID{}).String() {
		t.Fatal("the attempt has no trace id")
	}
	want := fmt.Sprintf(`msg="job failed" job_id=%d game_id=g-logged kind=stop attempt=1 trace_id=%s err=`, id, tid)
	wait.For(t, 10*time.Second, "the job's failure logged", func() bool { return strings.Contains(out.String(), want) })
}
