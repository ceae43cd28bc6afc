package telemetry

import (
	"context"
	"log/slog"
	"slices"

	"go.opentelemetry.io/otel/trace"
)

// DeferAttrs returns a logger like l.With(attrs...) whose attributes are
// formatted only when a record is logged. The standard handlers format
// With's attributes at once, which is wasted on a logger made per job
// whose records mostly fall below the level: at thousands of jobs a
// second it was a sizeable part of the worker's CPU. Records come out the
// same: the attributes first, then the record's own.
func DeferAttrs(l *slog.Logger, attrs ...slog.Attr) *slog.Logger {
	return slog.New(&deferredHandler{h: l.Handler(), attrs: attrs})
}

type deferredHandler struct {
	h     slog.Handler
	attrs []slog.Attr
}

func (d *deferredHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return d.h.Enabled(ctx, l)
}

func (d *deferredHandler) Handle(ctx context.Context, r slog.Record) error {
	nr := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	nr.AddAttrs(d.attrs...)
	r.Attrs(func(a slog.Attr) bool {
		nr.AddAttrs(a)
		return true
	})
	return d.h.Handle(ctx, nr)
}

func (d *deferredHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return d
	}
	return &deferredHandler{h: d.h, attrs: append(slices.Clip(d.attrs), attrs...)}
}

func (d *deferredHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return d
	}
	// A group nests what follows, not what came before: the deferred
	// attributes go to the handler first.
	return d.h.WithAttrs(d.attrs).WithGroup(name)
}

// TraceIDAttr is a trace_id attribute whose hexadecimal form is made only
// if the record is written.
func TraceIDAttr(id trace.TraceID) slog.Attr {
	return slog.Any("trace_id", traceIDValue(id))
}

type traceIDValue trace.TraceID

func (v traceIDValue) LogValue() slog.Value { return slog.StringValue(trace.TraceID(v).String()) }
