package telemetry

import (
	"bytes"
	"log/slog"
	"regexp"
	"testing"

	"go.opentelemetry.io/otel/trace"
)

// TestDeferAttrsWritesWhatWithWrites: the same records through l.With and
// through DeferAttrs come out byte for byte the same, groups and the
// handler's level included.
func TestDeferAttrsWritesWhatWithWrites(t *testing.T) {
	tid := trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36}
	attrs := []slog.Attr{slog.Int64("job_id", 7), slog.String("game_id", "g 1"), TraceIDAttr(tid)}
	args := make([]any, len(attrs))
	for i, a := range attrs {
		args[i] = a
	}
	logAll := func(l *slog.Logger) {
		l.Debug("below the level", "x", 1)
		l.Info("job succeeded")
		l.Warn("job failed", "err", "boom")
		l.With("more", true).Info("after With")
		l.WithGroup("g").Info("in a group", "y", 2)
		l.With("more", true).WithGroup("g").With("z", 3).Error("nested", "w", 4)
	}
	clock := regexp.MustCompile(`time=\S+ `)
	for name, newHandler := range map[string]func(*bytes.Buffer) slog.Handler{
		"text": func(b *bytes.Buffer) slog.Handler {
			return slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelInfo})
		},
		"json": func(b *bytes.Buffer) slog.Handler {
			return slog.NewJSONHandler(b, &slog.HandlerOptions{Level: slog.LevelInfo})
		},
	} {
		var eager, deferred, sourced bytes.Buffer
		logAll(slog.New(newHandler(&eager)).With(args...))
		logAll(DeferAttrs(slog.New(newHandler(&deferred)), attrs...))
		var src countingSource
		src.attrs = attrs
		var h DeferredHandler
		h.Reset(newHandler(&sourced), &src)
		logAll(slog.New(&h))
		strip := func(b *bytes.Buffer) string {
			if name == "json" {
				return regexp.MustCompile(`"time":"[^"]*",`).ReplaceAllString(b.String(), "")
			}
			return clock.ReplaceAllString(b.String(), "")
		}
		want := strip(&eager)
		for what, b := range map[string]*bytes.Buffer{"DeferAttrs": &deferred, "DeferredHandler": &sourced} {
			if got := strip(b); got != want {
				t.Errorf("%s: %s wrote\n%s\nWith wrote\n%s", name, what, got, want)
			}
			if !bytes.Contains(b.Bytes(), []byte(tid.String())) {
				t.Errorf("%s: %s: the trace id %s is missing:\n%s", name, what, tid, b.String())
			}
			if bytes.Contains(b.Bytes(), []byte("below the level")) {
				t.Errorf("%s: %s: a record below the level was written", name, what)
			}
		}
		// Asked once for each of the two records written through the
		// logger itself and once for each of the three With and
		// WithGroup made of it (which keep what they got); the record
		// below the level asked for nothing.
		if src.asked != 5 {
			t.Errorf("%s: the source was asked for its attributes %d times, want 5", name, src.asked)
		}
	}
}

type countingSource struct {
	attrs []slog.Attr
	asked int
}

func (c *countingSource) LogAttrs() []slog.Attr {
	c.asked++
	return c.attrs
}

// The point of DeferAttrs: a record below the level formats nothing.
func BenchmarkPerJobLogger(b *testing.B) {
	base := slog.New(slog.NewTextHandler(&bytes.Buffer{}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	tid := trace.TraceID{1, 2, 3}
	b.Run("With", func(b *testing.B) {
		b.ReportAllocs()
		for i := range b.N {
			l := base.With("job_id", int64(i), "game_id", "game-1", "kind", "stop", "attempt", 1, "trace_id", tid.String())
			l.Info("job succeeded")
		}
	})
	b.Run("DeferredHandler", func(b *testing.B) {
		b.ReportAllocs()
		var src jobSource
		for i := range b.N {
			src.id = int64(i)
			var h DeferredHandler
			h.Reset(base.Handler(), &src)
			l := slog.New(&h)
			l.Info("job succeeded")
		}
	})
	b.Run("DeferAttrs", func(b *testing.B) {
		b.ReportAllocs()
		for i := range b.N {
			l := DeferAttrs(base, slog.Int64("job_id", int64(i)), slog.String("game_id", "game-1"),
				slog.String("kind", "stop"), slog.Int("attempt", 1), TraceIDAttr(tid))
			l.Info("job succeeded")
		}
	})
}

type jobSource struct {
	id  int64
	tid trace.TraceID
}

func (j *jobSource) LogAttrs() []slog.Attr {
	return []slog.Attr{slog.Int64("job_id", j.id), slog.String("game_id", "game-1"),
		slog.String("kind", "stop"), slog.Int("attempt", 1), TraceIDAttr(j.tid)}
}
