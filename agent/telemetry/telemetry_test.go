package telemetry

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
)

func TestMetricsReachPrometheusAndLogsCarryTraceIDs(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "none")
	t.Setenv("OTEL_METRICS_EXPORTER", "")
	ctx := context.Background()
	tel, err := Setup(ctx, Config{ServiceVersion: "test", HostID: "host-a"})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(ctx)

	counter, err := otel.Meter("test").Int64Counter("rtm_test_things")
	if err != nil {
		t.Fatal(err)
	}
	counter.Add(ctx, 3)
	rec := httptest.NewRecorder()
	tel.MetricsHandler.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	if !strings.Contains(string(body), "rtm_test_things_total") || !strings.Contains(string(body), `service_name="rtmanager"`) {
		t.Fatalf("metric not exported in Prometheus format:\n%s", body)
	}

	var logs bytes.Buffer
	log := slog.New(LogHandler(slog.NewJSONHandler(&logs, nil)))
	spanCtx, span := otel.Tracer("test").Start(ctx, "op")
	log.InfoContext(spanCtx, "inside")
	span.End()
	log.InfoContext(ctx, "outside")
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if want := span.SpanContext().TraceID().String(); !strings.Contains(lines[0], `"trace_id":"`+want+`"`) {
		t.Fatalf("traced log line lacks trace id %s: %s", want, lines[0])
	}
	if strings.Contains(lines[1], "trace_id") {
		t.Fatalf("untraced log line has a trace id: %s", lines[1])
	}
	// With no exporter, nothing is recorded, but a span still has ids,
	// and a child of the Game Master's span keeps the Game Master's trace.
	if span.IsRecording() || !span.SpanContext().IsValid() {
		t.Fatalf("with no exporter: recording %v, span context valid %v; want false, true", span.IsRecording(), span.SpanContext().IsValid())
	}
	parent := otel.GetTextMapPropagator().Extract(ctx, propagation.MapCarrier{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
	_, child := otel.Tracer("test").Start(parent, "job")
	if child.IsRecording() || child.SpanContext().TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Fatalf("child of a sampled remote parent: recording %v, trace %s", child.IsRecording(), child.SpanContext().TraceID())
	}
}
