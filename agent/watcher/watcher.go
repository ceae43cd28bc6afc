// Package watcher follows the Docker events of the agent's containers and
// turns them into runtime-record transitions (issue 3).
//
// One goroutine reads the stream (engine.Events, filtered by the daemon to
// containers, this host's labels and the actions start, die, oom, destroy)
// and only copies each event into a bounded buffer. Another applies them in
// order, each change in one transaction with its outbox event (Map decides,
// db.Store.UpdateRecord writes). If the buffer is full the event is not
// silently lost: the watcher notes the overflow, throws the buffered events
// away and relists the host (reconcile.Reconciler.Pass), which repairs every
// record from Docker's current state; events that follow are applied on top.
//
// Each transition says its cause (see package outbox): the transaction
// reads the game's job in progress from the job table, under the game's
// lock, and a step that job asks for is recorded with its reason and id
// (the job's own commit then finds nothing left to write, or the other way
// round), a step on the way of its operation is left to the job, and
// anything else is observed_*.
//
// After events are applied the daemon time (timeNano) of the last one is
// stored as the host's cursor. Every (re)subscription asks for the events
// since that cursor minus CursorMargin (the daemon stamps events before it
// orders them, so a later-published event can carry an earlier time), and
// then relists, because the daemon's ring holds only 256 events and
// containers that die while the daemon is down produce none. Replayed events
// are harmless: a step already applied changes nothing, and an event older
// than the record's last operation that would move it is applied only when
// inspecting the container confirms it (see Map).
//
// The stream ending (EOF on a daemon restart), failing, or staying silent
// for IdleTimeout while the daemon does not answer a ping, leads to a new
// subscription after a capped exponential backoff with jitter.
package watcher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/galaxy/rtmanager/agent/engine"
	"github.com/galaxy/rtmanager/agent/intent"
	"github.com/galaxy/rtmanager/agent/reconcile"
	"github.com/galaxy/rtmanager/agent/telemetry"
	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/domain/crash"
	"github.com/galaxy/rtmanager/internal/domain/outbox"
	"github.com/galaxy/rtmanager/internal/domain/runtime"
	"github.com/galaxy/rtmanager/internal/retry"
)

// Defaults for zero Config fields.
const (
	DefaultBufferSize   = 4096
	DefaultIdleTimeout  = 30 * time.Second
	DefaultMinBackoff   = 200 * time.Millisecond
	DefaultMaxBackoff   = 30 * time.Second
	DefaultCursorMargin = 2 * time.Second
)

// cursorEvery bounds how many handled events may pass before the cursor is
// stored even while the buffer is not empty.
const cursorEvery = 256

// Config configures a Watcher.
type Config struct {
	// HostID is this agent's host; it must match the engine's.
	HostID string
	// BufferSize is the capacity of the buffer between the reading
	// goroutine and the applying one.
	BufferSize int
	// IdleTimeout: after this long without an event the daemon is pinged,
	// and the stream is resubscribed if the ping fails.
	IdleTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait before a resubscription.
	MinBackoff, MaxBackoff time.Duration
	// CursorMargin is subtracted from the stored cursor when subscribing.
	// With no stored cursor yet, the subscription starts this long before
	// the agent's clock (the relist that follows covers the rest).
	CursorMargin time.Duration
	// Crash bounds the output kept in the crash report of an observed die
	// no job asked for; zero fields take the defaults.
	Crash crash.Limits
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// Stats are the watcher's counters since New.
type Stats struct {
	Received   int64 // events read from the stream
	Applied    int64 // transitions committed
	Ignored    int64 // events that move no record: stale container, no record, removed, unmapped, foreign, invalid
	Duplicates int64 // events already reflected by the record
	Deferred   int64 // steps on the way of a job in progress, left to the job
	Relists    int64 // reconcile passes run by the watcher
	Overflows  int64 // times the buffer overflowed
	Dropped    int64 // events lost to an overflow (covered by a relist)
	Reconnects int64 // subscriptions after the first
	Errors     int64 // failed applies, relists, subscriptions
	Inspects   int64 // containers inspected because an event was ambiguous
	Cursor     int64 // last stored cursor (daemon nanoseconds)
	LastLag    time.Duration
}

// Watcher follows one host's container events.
type Watcher struct {
	store   *db.Store
	eng     engine.Engine
	rec     *reconcile.Reconciler
	intents *intent.Registry
	cfg     Config
	log     *slog.Logger

	connected atomic.Bool

	mu    sync.Mutex
	stats Stats

	oom map[string]bool // containers with an oom event since their last start; applying goroutine only

	drops atomic.Int64 // events dropped by the reader since the applier last looked

	// Test hooks, set before Run.
	applyHook   func(engine.Event)
	appliedHook func(ev engine.Event, lag, sinceRead time.Duration)

	mEvents  metric.Int64Counter
	mRelists metric.Int64Counter
	mDropped metric.Int64Counter
	mConns   metric.Int64Counter
	mLag     metric.Float64Histogram
}

// New returns a watcher. rec is used for the relists. intents may be nil;
// the watcher reads the sweeper's cleanup intents from it (jobs are
// attributed from the job table).
func New(store *db.Store, eng engine.Engine, rec *reconcile.Reconciler, intents *intent.Registry, cfg Config) *Watcher {
	if cfg.BufferSize <= 0 {
		cfg.BufferSize = DefaultBufferSize
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	cfg.MaxBackoff = max(cfg.MaxBackoff, cfg.MinBackoff)
	if cfg.CursorMargin <= 0 {
		cfg.CursorMargin = DefaultCursorMargin
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	w := &Watcher{
		store: store, eng: eng, rec: rec, intents: intents, cfg: cfg,
		log: log.With("component", "watcher", "host_id", cfg.HostID),
		oom: map[string]bool{},
	}
	m := otel.Meter("github.com/galaxy/rtmanager/agent/watcher")
	w.mEvents, _ = m.Int64Counter("rtmanager.watcher.events", metric.WithDescription("Docker events handled, by outcome (applied, ignored, duplicate, deferred, dropped, noted)."))
	w.mRelists, _ = m.Int64Counter("rtmanager.watcher.relists", metric.WithDescription("Relists run by the watcher, by reason (subscribe, overflow)."))
	w.mDropped, _ = m.Int64Counter("rtmanager.watcher.overflows", metric.WithDescription("Times the event buffer overflowed."))
	w.mConns, _ = m.Int64Counter("rtmanager.watcher.subscriptions", metric.WithDescription("Event stream subscriptions, by outcome."))
	w.mLag, _ = m.Float64Histogram("rtmanager.watcher.lag", metric.WithUnit("s"),
		metric.WithDescription("Commit time of a transition minus the daemon time of its event."))
	_, _ = m.Int64ObservableGauge("rtmanager.watcher.connected",
		metric.WithDescription("1 while the Docker events stream is connected, 0 otherwise."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			var v int64
			if w.connected.Load() {
				v = 1
			}
			o.Observe(v, metric.WithAttributes(attribute.String("host_id", w.cfg.HostID)))
			return nil
		}))
	return w
}

// Connected reports whether the watcher is subscribed and has relisted
// since.
func (w *Watcher) Connected() bool { return w.connected.Load() }

// Stats returns a copy of the counters.
func (w *Watcher) Stats() Stats {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stats
}

func (w *Watcher) count(f func(*Stats)) {
	w.mu.Lock()
	f(&w.stats)
	w.mu.Unlock()
}

// Run follows the events until ctx is done, then returns nil.
func (w *Watcher) Run(ctx context.Context) error {
	bo := retry.Backoff(w.cfg.MinBackoff, w.cfg.MaxBackoff)
	for first := true; ; first = false {
		if !first {
			w.count(func(s *Stats) { s.Reconnects++ })
		}
		healthy, err := w.session(ctx)
		w.connected.Store(false)
		if ctx.Err() != nil {
			w.log.Info("events watcher stopped")
			return nil
		}
		if healthy {
			bo.Reset()
		}
		delay := bo.NextBackOff()
		w.count(func(s *Stats) { s.Errors++ })
		w.log.Warn("docker events disconnected", "error", err, "retry_in", delay)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			w.log.Info("events watcher stopped")
			return nil
		case <-t.C:
		}
	}
}

var errIdle = errors.New("docker events stream idle and the daemon does not answer")

// session subscribes, relists and applies events until the stream or an
// apply fails. healthy reports that the subscription got as far as the
// relist, which resets the backoff.
func (w *Watcher) session(ctx context.Context) (healthy bool, err error) {
	pctx, cancel := context.WithTimeout(ctx, min(w.cfg.IdleTimeout, 10*time.Second))
	err = w.eng.Ping(pctx)
	cancel()
	if err != nil {
		w.mConns.Add(ctx, 1, metric.WithAttributes(attribute.String("outcome", "daemon_down")))
		return false, err
	}
	cursor := int64(0)
	host, err := w.store.GetHost(ctx, w.cfg.HostID)
	switch {
	case errors.Is(err, db.ErrHostNotFound):
		w.log.Warn("host is not registered; starting without an event cursor")
	case err != nil:
		return false, err
	default:
		cursor = host.EventCursorNanos
	}
	since := cursor - w.cfg.CursorMargin.Nanoseconds()
	if cursor == 0 {
		since = time.Now().Add(-w.cfg.CursorMargin).UnixNano()
	}
	since = max(since, 1)

	sctx, stop := context.WithCancel(ctx)
	defer stop()
	buf := make(chan queued, w.cfg.BufferSize)
	var overflow atomic.Bool
	done := make(chan struct{})
	var streamErr error
	go func() {
		defer close(done)
		// Only copies into the buffer: the daemon drops a subscriber that
		// does not read within 100 ms.
		streamErr = w.eng.Events(sctx, engine.EventsOptions{SinceNano: since, Actions: engine.DefaultEventActions()}, func(ev engine.Event) {
			select {
			case buf <- queued{ev, time.Now()}:
			default:
				overflow.Store(true)
				w.drops.Add(1)
			}
		})
	}()
	defer func() { stop(); <-done }()
	w.log.Info("docker events subscribed", "cursor", cursor, "since", since, "replay", cursor > 0)

	if err := w.relist(ctx, "subscribe"); err != nil {
		w.mConns.Add(ctx, 1, metric.WithAttributes(attribute.String("outcome", "relist_failed")))
		return false, err
	}
	w.mConns.Add(ctx, 1, metric.WithAttributes(attribute.String("outcome", "connected")))
	w.connected.Store(true)
	w.log.Info("docker events connected")

	var (
		pending     int64 // highest handled event time not yet stored
		sinceStored int
	)
	flush := func() error {
		if pending == 0 {
			return nil
		}
		// Also on the way out after ctx is done.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := w.store.AdvanceEventCursor(fctx, w.cfg.HostID, pending); err != nil {
			return err
		}
		w.count(func(s *Stats) { s.Cursor = max(s.Cursor, pending) })
		pending, sinceStored = 0, 0
		return nil
	}
	handle := func(q queued) error {
		if err := w.apply(ctx, q.ev, q.read); err != nil {
			return err
		}
		pending = max(pending, q.ev.TimeNano)
		sinceStored++
		if len(buf) == 0 || sinceStored >= cursorEvery {
			return flush()
		}
		return nil
	}

	idle := time.NewTimer(w.cfg.IdleTimeout)
	defer idle.Stop()
	for {
		if overflow.Swap(false) {
			n := w.drops.Swap(0)
			for drained := false; !drained; {
				select {
				case <-buf:
					n++
				default:
					drained = true
				}
			}
			w.count(func(s *Stats) { s.Overflows++; s.Dropped += n })
			w.mDropped.Add(ctx, 1)
			w.mEvents.Add(ctx, n, metric.WithAttributes(attribute.String("outcome", "dropped")))
			w.log.Warn("docker events buffer overflowed; relisting", "dropped", n, "buffer", w.cfg.BufferSize)
			if err := w.relist(ctx, "overflow"); err != nil {
				return true, err
			}
			continue
		}
		select {
		case <-ctx.Done():
			_ = flush()
			return true, ctx.Err()
		case <-done:
			// Apply what was read before the stream ended.
			for len(buf) > 0 {
				if err := handle(<-buf); err != nil {
					return true, err
				}
			}
			if err := flush(); err != nil {
				return true, err
			}
			if overflow.Load() {
				return true, fmt.Errorf("%w (after a buffer overflow)", streamErr)
			}
			return true, streamErr
		case q := <-buf:
			if err := handle(q); err != nil {
				return true, err
			}
			idle.Reset(w.cfg.IdleTimeout)
		case <-idle.C:
			pctx, cancel := context.WithTimeout(ctx, min(w.cfg.IdleTimeout, 10*time.Second))
			err := w.eng.Ping(pctx)
			cancel()
			if err != nil {
				return true, fmt.Errorf("%w: %w", errIdle, err)
			}
			idle.Reset(w.cfg.IdleTimeout)
		}
	}
}

func (w *Watcher) relist(ctx context.Context, reason string) error {
	w.count(func(s *Stats) { s.Relists++ })
	w.mRelists.Add(ctx, 1, metric.WithAttributes(attribute.String("reason", reason)))
	rep, err := w.rec.Pass(ctx, "watcher_"+reason)
	if err != nil {
		return fmt.Errorf("relist (%s): %w", reason, err)
	}
	w.log.Info("relisted", "reason", reason, "repairs", rep.Repairs(), "orphans_reported", rep.OrphansReported, "duration", rep.Duration)
	return nil
}

// apply handles one event: an error means the event could not be applied
// (the database or the daemon failed) and the caller resubscribes.
func (w *Watcher) apply(ctx context.Context, ev engine.Event, read time.Time) (err error) {
	ctx, span := tracer.Start(ctx, "docker event "+ev.Action, trace.WithAttributes(
		telemetry.HostID(w.cfg.HostID), telemetry.ContainerID(ev.ID), telemetry.GameID(ev.GameID()),
		attribute.String("docker.event.action", ev.Action), attribute.Int64("docker.event.time_nano", ev.TimeNano)))
	defer func() {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}()
	w.count(func(s *Stats) { s.Received++ })
	if w.applyHook != nil {
		w.applyHook(ev)
	}
	if status, ok := ev.HealthStatus(); ok {
		return w.applyHealth(ctx, ev, status)
	}
	switch ev.Action {
	case "oom":
		w.noteOOM(ev.ID)
		w.mEvents.Add(ctx, 1, metric.WithAttributes(attribute.String("outcome", "noted")))
		w.count(func(s *Stats) { s.Ignored++ })
		return nil
	case "start", "die", "destroy":
		// An oom belongs to the run that the die ends.
		defer delete(w.oom, ev.ID)
	}

	in := Input{HostID: w.cfg.HostID, Event: ev, OOM: w.oom[ev.ID]}
	if w.intents != nil && ev.Action == "destroy" {
		_, in.Cleanup = w.intents.Lookup(ev.ID, intent.Cleanup)
	}
	gameID := in.GameID()
	_, _, verdict := Map(nil, in)
	if verdict != NoRecord { // not even worth a transaction
		w.done(ctx, ev, verdict, 0)
		return nil
	}
	var inspected bool
	ch, err := w.store.ObserveRecord(ctx, w.cfg.HostID, gameID, func(cur *runtime.RuntimeRecord, active *outbox.ActiveJob, _ time.Time) (runtime.RuntimeRecord, outbox.TransitionDetails, error) {
		in := in
		in.Job = active
		next, d, v := Map(cur, in)
		if v == NeedInspect {
			c, err := w.eng.InspectContainer(ctx, ev.ID)
			if err != nil && !errors.Is(err, engine.ErrNotFound) {
				return runtime.RuntimeRecord{}, outbox.TransitionDetails{}, err
			}
			inspected = true
			obs := reconcile.ObservedFrom(c, err == nil)
			in.Observed = &obs
			next, d, v = Map(cur, in)
		}
		verdict = v
		if v == Apply && reconcile.IsCrash(next, d) {
			d.Crash = reconcile.CaptureCrash(ctx, w.eng, w.cfg.Crash, next, d, w.log)
		}
		if v != Apply {
			if cur == nil {
				return runtime.RuntimeRecord{}, outbox.TransitionDetails{}, errNoRecord
			}
			return *cur, outbox.TransitionDetails{}, nil
		}
		return next, d, nil
	})
	if inspected {
		w.count(func(s *Stats) { s.Inspects++ })
	}
	if errors.Is(err, errNoRecord) {
		err = nil
	}
	if err != nil {
		return fmt.Errorf("apply %s event of container %s (game %s): %w", ev.Action, ev.ID, gameID, err)
	}
	if verdict == Apply && !ch.Changed {
		verdict = NoChange
	}
	var lag time.Duration
	if verdict == Apply {
		lag = time.Since(time.Unix(0, ev.TimeNano))
		w.log.Debug("record updated", "game_id", gameID, "container_id", ev.ID, "action", ev.Action,
			"status", ch.Record.Status, "event_id", ch.EventID, "lag", lag)
	}
	w.done(ctx, ev, verdict, lag)
	if verdict == Apply && w.appliedHook != nil {
		w.appliedHook(ev, lag, time.Since(read))
	}
	return nil
}

// queued is an event in the buffer, with the time the reader got it.
type queued struct {
	ev   engine.Event
	read time.Time
}

var tracer = otel.Tracer("github.com/galaxy/rtmanager/agent/watcher")

// errNoRecord aborts the transaction of an event whose game has no record.
var errNoRecord = errors.New("no record")

func (w *Watcher) done(ctx context.Context, ev engine.Event, v Verdict, lag time.Duration) {
	trace.SpanFromContext(ctx).SetAttributes(attribute.String("rtmanager.event.verdict", v.String()))
	outcome := "ignored"
	switch v {
	case Apply:
		outcome = "applied"
		w.mLag.Record(ctx, lag.Seconds())
	case NoChange, Duplicate:
		outcome = "duplicate"
	case Deferred:
		outcome = "deferred"
	}
	w.mEvents.Add(ctx, 1, metric.WithAttributes(attribute.String("outcome", outcome), attribute.String("action", ev.Action)))
	w.count(func(s *Stats) {
		switch outcome {
		case "applied":
			s.Applied++
			s.LastLag = lag
		case "duplicate":
			s.Duplicates++
		case "deferred":
			s.Deferred++
		default:
			s.Ignored++
		}
	})
	if v != Apply && v != NoChange && v != Duplicate && v != NoRecord && v != Stale && v != Deferred {
		w.log.Debug("event ignored", "container_id", ev.ID, "action", ev.Action, "verdict", v.String())
	}
}

func (w *Watcher) noteOOM(containerID string) {
	if len(w.oom) >= 10_000 { // bound memory if dies never come
		clear(w.oom)
	}
	w.oom[containerID] = true
}

// applyHealth records a health_status event: one runtime.health event when
// the running record of that container changes health, nothing otherwise
// (another container, a replay, a probe that changed nothing).
func (w *Watcher) applyHealth(ctx context.Context, ev engine.Event, status string) error {
	gameID := ev.GameID()
	if ev.Attributes[engine.LabelManaged] != "true" || ev.Attributes[engine.LabelHost] != w.cfg.HostID || gameID == "" || ev.TimeNano <= 0 {
		w.done(ctx, ev, Foreign, 0)
		return nil
	}
	at := time.Unix(0, ev.TimeNano).UTC().Truncate(time.Microsecond)
	ch, err := w.store.ObserveHealth(ctx, w.cfg.HostID, gameID, ev.ID, runtime.HealthFromDocker(status), outbox.HealthObserved, at)
	if err != nil {
		return fmt.Errorf("apply health_status event of container %s (game %s): %w", ev.ID, gameID, err)
	}
	v := NoChange
	if ch.Changed {
		v = Apply
		w.log.Debug("health changed", "game_id", gameID, "container_id", ev.ID, "from", ch.From, "to", ch.To, "event_id", ch.EventID)
	}
	w.done(ctx, ev, v, 0)
	return nil
}
