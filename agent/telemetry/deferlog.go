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
	return slog.New(&DeferredHandler{h: l.Handler(), src: attrList(attrs)})
}

// AttrSource gives a DeferredHandler its attributes, when a record is
// written.
type AttrSource interface {
	LogAttrs() []slog.Attr
}

type attrList []slog.Attr

func (a attrList) LogAttrs() []slog.Attr { return a }

// DeferredHandler is the handler of DeferAttrs with its attributes asked
// of an AttrSource, so that even they are made only when a record is
// written. Its zero value is not usable: set it with Reset. It can live
// inside the struct it logs about (a job's), which saves the handler's
// and the attributes' allocations: slog.New(&x.handler) is then the only
// one.
type DeferredHandler struct {
	h   slog.Handler
	src AttrSource
}

// Reset makes d hand records to h, with src's attributes first.
func (d *DeferredHandler) Reset(h slog.Handler, src AttrSource) { d.h, d.src = h, src }

func (d *DeferredHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return d.h.Enabled(ctx, l)
}

func (d *DeferredHandler) Handle(ctx context.Context, r slog.Record) error {
	nr := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	nr.AddAttrs(d.src.LogAttrs()...)
	r.Attrs(func(a slog.Attr) bool {
		nr.AddAttrs(a)
		return true
	})
	return d.h.Handle(ctx, nr)
}

func (d *DeferredHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return d
	}
	return &DeferredHandler{h: d.h, src: attrList(append(slices.Clip(d.src.LogAttrs()), attrs...))}
}

func (d *DeferredHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return d
	}
	// A group nests what follows, not what came before: the deferred
	// attributes go to the handler first.
	return d.h.WithAttrs(d.src.LogAttrs()).WithGroup(name)
}

// TraceIDAttr is a trace_id attribute whose hexadecimal form is made only
// if the record is written.
func TraceIDAttr(id trace.TraceID) slog.Attr {
	return slog.Any("trace_id", traceIDValue(id))
}

type traceIDValue trace.TraceID

func (v traceIDValue) LogValue() slog.Value { return slog.StringValue(trace.TraceID(v).String()) }
