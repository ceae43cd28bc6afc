package telemetry

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/galaxy/rtmanager/internal/testutil/wait"
)

// TestTracesReachAnOTLPReceiver configures the exporter only through the
// standard OTEL_* variables and checks that a span arrives at an OTLP/HTTP
// receiver on loopback, decoded with the official OTLP protobuf types, with
// the agent's resource attributes.
func TestTracesReachAnOTLPReceiver(t *testing.T) {
	var (
		mu       sync.Mutex
		received []*coltracepb.ExportTraceServiceRequest
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/traces" {
			http.NotFound(w, r)
			return
		}
		body, _ := io.ReadAll(r.Body)
		var req coltracepb.ExportTraceServiceRequest
		if err := proto.Unmarshal(body, &req); err != nil {
			t.Errorf("the receiver could not decode an export request: %v", err)
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		received = append(received, &req)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		_, _ = w.Write(out)
	}))
	defer srv.Close()

	t.Setenv("OTEL_TRACES_EXPORTER", "otlp")
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
	t.Setenv("OTEL_METRICS_EXPORTER", "none")
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=test")

	ctx := context.Background()
	tel, err := Setup(ctx, Config{ServiceVersion: "v-test", HostID: "host-otlp"})
	if err != nil {
		t.Fatal(err)
	}
	_, span := otel.Tracer("test").Start(ctx, "reconcile pass")
	span.SetAttributes(GameID("g-1"))
	span.End()
	shutdownCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := tel.Shutdown(shutdownCtx); err != nil { // flushes the batch
		t.Fatal(err)
	}

	wait.For(t, 10*time.Second, "the span at the receiver", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(received) > 0
	})
	mu.Lock()
	defer mu.Unlock()
	rs := received[0].GetResourceSpans()[0]
	attrs := map[string]string{}
	for _, kv := range rs.GetResource().GetAttributes() {
		attrs[kv.GetKey()] = kv.GetValue().GetStringValue()
	}
	for key, want := range map[string]string{
		"service.name": "rtmanager", "service.version": "v-test", "host.name": "host-otlp",
		"deployment.environment.name": "test",
	} {
		if attrs[key] != want {
			t.Errorf("resource attribute %s = %q, want %q (all: %v)", key, attrs[key], want, attrs)
		}
	}
	got := rs.GetScopeSpans()[0].GetSpans()[0]
	if got.GetName() != "reconcile pass" {
		t.Fatalf("span %q arrived, want \"reconcile pass\"", got.GetName())
	}
}
