// Package telemetry sets up OpenTelemetry for the agent: traces and metrics
// exported as the standard OTEL_* variables say (OTLP over gRPC or HTTP,
// console, none), metrics also served in Prometheus format on the agent's
// HTTP port, W3C trace context propagation, and a slog handler that puts
// trace ids into the log lines of a traced operation.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/otel"
	promexporter "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// ServiceName is the service.name of every span and metric.
const ServiceName = "rtmanager"

// Config describes this agent to the telemetry backends.
type Config struct {
	ServiceVersion string
	HostID         string
}

// Telemetry holds the providers and the Prometheus handler.
type Telemetry struct {
	TracerProvider *sdktrace.TracerProvider
	MeterProvider  *sdkmetric.MeterProvider
	// MetricsHandler serves the metrics in Prometheus text format.
	MetricsHandler http.Handler

	shutdown []func(context.Context) error
}

// Setup creates the providers, installs them as the global ones (the
// parts of the agent take their tracers and meters from otel's globals)
// and installs the W3C trace-context propagator.
//
// With no OTEL_TRACES_EXPORTER or OTEL_METRICS_EXPORTER set, nothing is
// exported over the network: autoexport's own default would be OTLP to
// localhost, which an agent without a collector would retry forever.
func Setup(ctx context.Context, cfg Config) (*Telemetry, error) {
	res, err := resource.Merge(resource.Default(), resource.NewWithAttributes(semconv.SchemaURL,
		semconv.ServiceName(ServiceName),
		semconv.ServiceVersion(cfg.ServiceVersion),
		semconv.HostName(cfg.HostID),
	))
	if err != nil {
		return nil, fmt.Errorf("telemetry resource: %w", err)
	}
	// OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME still win.
	if envRes, err := resource.New(ctx, resource.WithFromEnv()); err == nil {
		if merged, err := resource.Merge(res, envRes); err == nil {
			res = merged
		}
	}

	t := &Telemetry{}
	tpOpts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	exporting := false
	if os.Getenv("OTEL_TRACES_EXPORTER") != "" {
		spans, err := autoexport.NewSpanExporter(ctx)
		if err != nil {
			return nil, fmt.Errorf("trace exporter from OTEL_TRACES_EXPORTER: %w", err)
		}
		if !autoexport.IsNoneSpanExporter(spans) {
			tpOpts = append(tpOpts, sdktrace.WithBatcher(spans))
			exporting = true
		}
	}
	if !exporting {
		// Nothing would read a recorded span: record none. The spans
		// still get ids (a job's logs carry its trace id, the Game
		// Master's when it sent one), which is all the agent uses them
		// for then; recording them cost the worker 3–4 µs of CPU a job
		// in the queue bench.
		tpOpts = append(tpOpts, sdktrace.WithSampler(sdktrace.NeverSample()))
	}
	t.TracerProvider = sdktrace.NewTracerProvider(tpOpts...)
	t.shutdown = append(t.shutdown, t.TracerProvider.Shutdown)

	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	prom, err := promexporter.New(promexporter.WithRegisterer(registry))
	if err != nil {
		return nil, fmt.Errorf("prometheus exporter: %w", err)
	}
	mpOpts := []sdkmetric.Option{sdkmetric.WithResource(res), sdkmetric.WithReader(prom)}
	if os.Getenv("OTEL_METRICS_EXPORTER") != "" {
		reader, err := autoexport.NewMetricReader(ctx)
		if err != nil {
			return nil, fmt.Errorf("metric exporter from OTEL_METRICS_EXPORTER: %w", err)
		}
		if !autoexport.IsNoneMetricReader(reader) {
			mpOpts = append(mpOpts, sdkmetric.WithReader(reader))
		}
	}
	t.MeterProvider = sdkmetric.NewMeterProvider(mpOpts...)
	t.shutdown = append(t.shutdown, t.MeterProvider.Shutdown)
	t.MetricsHandler = promhttp.HandlerFor(registry, promhttp.HandlerOpts{})

	otel.SetTracerProvider(t.TracerProvider)
	otel.SetMeterProvider(t.MeterProvider)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	return t, nil
}

// Shutdown flushes and stops the exporters.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	var errs []error
	for _, f := range t.shutdown {
		errs = append(errs, f(ctx))
	}
	return errors.Join(errs...)
}

// LogHandler wraps h so that records logged with a context that carries a
// span get trace_id and span_id attributes.
func LogHandler(h slog.Handler) slog.Handler { return traceHandler{h} }

type traceHandler struct{ slog.Handler }

func (h traceHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.Handler.Handle(ctx, r)
}

func (h traceHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return traceHandler{h.Handler.WithAttrs(attrs)}
}

func (h traceHandler) WithGroup(name string) slog.Handler {
	return traceHandler{h.Handler.WithGroup(name)}
}
