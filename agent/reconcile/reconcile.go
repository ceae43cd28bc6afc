// Package reconcile is the agent's relist: it compares the containers
// Docker has for this host with the runtime records of this host and
// repairs what no event told (kubelet-style relist). The events watcher
// runs a pass after every (re)subscribe and when its buffer overflowed; the
// agent also runs one periodically.
//
// A pass lists the host's live records (running, stopped; one snapshot)
// first and the host's labelled containers second, so that a container a
// job creates in between is seen as a container without a record (left
// alone while the job is queued or running) rather than a record's
// container being taken for gone. Each repair re-inspects its container inside the record's
// transaction (under the game's lock), so it decides on what Docker says at
// commit time, not on the listing, and is skipped when the record moved in
// between. Repairs:
//
//   - record running, container exited or dead → stopped (reconcile_exit,
//     with the exit code and the daemon's OOM flag);
//   - record running or stopped, container gone → removed
//     (reconcile_dispose), container id cleared;
//   - record stopped, container running → running (reconcile_start);
//   - a labelled container that no live record is bound to (no record, a
//     removed record, or a second container of one game) → one
//     container.orphaned event, and after OrphanGrace since its creation it
//     is removed — unless a queued or running job of its game exists on the
//     host. The report is decided under the game's lock, looking at Docker
//     again first: the listing is older, and a container removed and its
//     record's removal committed since then would look owned by nobody.
//
// Containers that are restarting, being removed, or created but not started
// are left for a later event or pass, and so are the records of games a job
// is working on (its job in progress: running, or queued again for its next
// attempt after a failure, a drain or its agent's death) or whose container
// this agent's sweeper is removing: their writer commits the change itself,
// under its own reason (see package outbox). A periodic pass also leaves
// an exit or a start younger than Config.EventGrace to the events watcher,
// so that a change no job asked for is reported as the event that tells it
// (observed_*), not as a repair that raced the event. Transitions are
// dated with the daemon's own times (StartedAt, FinishedAt) so the
// watcher's duplicate detection (event time not after the record's
// last_op_at) stays right.
//
// Orphans are reported once: the pass remembers the containers it reported
// (per process), and the store writes the event only if no
// container.orphaned event of that container is in the outbox, so a restarted
// agent does not report it again either (until the outbox retention prunes
// the old event).
package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/galaxy/rtmanager/agent/engine"
	"github.com/galaxy/rtmanager/agent/intent"
	"github.com/galaxy/rtmanager/agent/telemetry"
	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/domain/crash"
	"github.com/galaxy/rtmanager/internal/domain/outbox"
	"github.com/galaxy/rtmanager/internal/domain/runtime"
)

// Defaults for zero Config fields.
const (
	DefaultInterval    = 5 * time.Minute
	DefaultOrphanGrace = 10 * time.Minute
	DefaultEventGrace  = 5 * time.Second
)

// Config configures a Reconciler.
type Config struct {
	// HostID is this agent's host; it must match the engine's.
	HostID string
	// Interval between periodic passes in Run; 0 means DefaultInterval.
	Interval time.Duration
	// OrphanGrace is how long after its creation an orphaned container is
	// removed; 0 means DefaultOrphanGrace, a negative value never removes.
	OrphanGrace time.Duration
	// EventGrace: a periodic pass leaves to the events watcher a container
	// that started or exited less than this long ago, so that the change
	// is reported as the event that tells it (observed_*), not as a
	// repair; 0 means DefaultEventGrace, a negative value none. The other
	// passes (at start, after a (re)subscription or an overflow: events
	// may have been lost) repair at once.
	EventGrace time.Duration
	// Intents, when set, are the agent's own pending container
	// operations: a record whose container the sweeper is removing is
	// left to the sweeper, which commits the removal with reason cleanup.
	Intents *intent.Registry
	// Crash bounds the output kept in the crash report of an exit this
	// reconciler finds (reconcile_exit); zero fields take the defaults.
	Crash crash.Limits
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// Report says what one pass found and did.
type Report struct {
	Reason     string
	Records    int // live records of the host
	Containers int // labelled containers of the host

	Stopped  int // reconcile_exit repairs committed
	Started  int // reconcile_start repairs committed
	Disposed int // reconcile_dispose repairs committed
	Health   int // runtime.health changes committed (reconcile_health)

	Orphans         int // containers no live record is bound to
	OrphansReported int // container.orphaned events written by this pass
	OrphansRemoved  int // orphaned containers removed
	Skipped         int // left alone: ambiguous state, a job at work, or a fresh change left to its event

	Duration time.Duration
}

// Repairs is the number of record transitions the pass committed.
func (r Report) Repairs() int { return r.Stopped + r.Started + r.Disposed }

// Reconciler runs relist passes for one host.
type Reconciler struct {
	store *db.Store
	eng   engine.Engine
	cfg   Config
	log   *slog.Logger
	now   func() time.Time

	mu       sync.Mutex          // one pass at a time
	reported map[string]struct{} // orphans reported (or found reported) by this process

	mPasses  metric.Int64Counter
	mRepairs metric.Int64Counter
	mOrphans metric.Int64Counter
	mErrors  metric.Int64Counter
	mTime    metric.Float64Histogram
}

// New returns a reconciler for cfg.HostID.
func New(store *db.Store, eng engine.Engine, cfg Config) *Reconciler {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.EventGrace == 0 {
		cfg.EventGrace = DefaultEventGrace
	}
	if cfg.OrphanGrace == 0 {
		cfg.OrphanGrace = DefaultOrphanGrace
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	r := &Reconciler{
		store:    store,
		eng:      eng,
		cfg:      cfg,
		log:      log.With("component", "reconcile", "host_id", cfg.HostID),
		now:      time.Now,
		reported: map[string]struct{}{},
	}
	m := otel.Meter("github.com/galaxy/rtmanager/agent/reconcile")
	r.mPasses, _ = m.Int64Counter("rtmanager.reconcile.passes", metric.WithDescription("Reconcile passes run, by reason."))
	r.mRepairs, _ = m.Int64Counter("rtmanager.reconcile.repairs", metric.WithDescription("Record transitions committed by reconciliation, by reason."))
	r.mOrphans, _ = m.Int64Counter("rtmanager.reconcile.orphans", metric.WithDescription("Orphaned containers reported or removed, by action."))
	r.mErrors, _ = m.Int64Counter("rtmanager.reconcile.errors", metric.WithDescription("Reconcile passes or repairs that failed."))
	r.mTime, _ = m.Float64Histogram("rtmanager.reconcile.duration", metric.WithUnit("s"), metric.WithDescription("Duration of a reconcile pass."))
	return r
}

// Run runs a pass at once, then every Interval, until ctx is done; it then
// returns nil. A failed pass is logged and retried at the next tick.
func (r *Reconciler) Run(ctx context.Context) error {
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	reason := "start"
	for {
		if _, err := r.Pass(ctx, reason); err != nil && ctx.Err() == nil {
			r.log.Warn("reconcile pass failed", "reason", reason, "error", err)
		}
		reason = PeriodicPass
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// PeriodicPass is the reason of Run's passes after its first: they leave
// fresh changes to the events watcher (see Config.EventGrace).
const PeriodicPass = "periodic"

// Pass runs one relist-and-repair pass. Concurrent calls run one after the
// other. A repair that fails does not stop the others: the pass goes on and
// returns the errors joined, with the report of what it did.
func (r *Reconciler) Pass(ctx context.Context, reason string) (Report, error) {
	ctx, span := tracer.Start(ctx, "reconcile pass", trace.WithAttributes(
		telemetry.HostID(r.cfg.HostID), attribute.String("rtmanager.reconcile.reason", reason)))
	defer span.End()
	r.mu.Lock()
	defer r.mu.Unlock()
	start := time.Now()
	rep := Report{Reason: reason}
	var grace time.Duration
	if reason == PeriodicPass {
		grace = r.cfg.EventGrace
	}
	err := r.pass(ctx, &rep, grace)
	rep.Duration = time.Since(start)
	span.SetAttributes(
		attribute.Int("rtmanager.reconcile.records", rep.Records),
		attribute.Int("rtmanager.reconcile.containers", rep.Containers),
		attribute.Int("rtmanager.reconcile.repairs", rep.Repairs()),
		attribute.Int("rtmanager.reconcile.orphans", rep.Orphans))
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}

	attrs := metric.WithAttributes(attribute.String("reason", reason))
	r.mPasses.Add(ctx, 1, attrs)
	r.mTime.Record(ctx, rep.Duration.Seconds(), attrs)
	if err != nil {
		r.mErrors.Add(ctx, 1)
	}
	lvl := slog.LevelDebug
	if rep.Repairs() > 0 || rep.OrphansReported > 0 || rep.OrphansRemoved > 0 || err != nil {
		lvl = slog.LevelInfo
	}
	r.log.Log(ctx, lvl, "reconcile pass",
		"reason", reason, "records", rep.Records, "containers", rep.Containers,
		"stopped", rep.Stopped, "started", rep.Started, "disposed", rep.Disposed,
		"orphans", rep.Orphans, "orphans_reported", rep.OrphansReported, "orphans_removed", rep.OrphansRemoved,
		"skipped", rep.Skipped, "duration", rep.Duration, "error", err)
	return rep, err
}

var tracer = otel.Tracer("github.com/galaxy/rtmanager/agent/reconcile")

func (r *Reconciler) pass(ctx context.Context, rep *Report, grace time.Duration) error {
	// Records first, containers second: see the package comment.
	records, err := r.store.ListLiveRecords(ctx, r.cfg.HostID)
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	containers, err := r.eng.ListManaged(ctx)
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	rep.Records, rep.Containers = len(records), len(containers)
	health, err := r.store.RunningHealth(ctx, r.cfg.HostID)
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}

	byID := make(map[string]engine.Container, len(containers))
	for _, c := range containers {
		if c.HostID == r.cfg.HostID { // ListManaged filters already; be sure
			byID[c.ID] = c
		}
	}

	var errs []error
	bound := make(map[string]bool, len(records))
	for _, rec := range records {
		if rec.CurrentContainerID == "" {
			continue
		}
		bound[rec.CurrentContainerID] = true
		c, found := byID[rec.CurrentContainerID]
		if !needsRepair(rec, c, found) {
			if err := r.health(ctx, rec, c, found, health[rec.GameID], rep); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		kind, err := r.repair(ctx, rec, grace)
		switch {
		case err != nil:
			errs = append(errs, err)
		case kind == outbox.ReasonReconcileExit:
			rep.Stopped++
		case kind == outbox.ReasonReconcileStart:
			rep.Started++
		case kind == outbox.ReasonReconcileDispose:
			rep.Disposed++
		default:
			rep.Skipped++
		}
		if kind != "" {
			r.mRepairs.Add(ctx, 1, metric.WithAttributes(attribute.String("reason", string(kind))))
		}
	}

	seen := make(map[string]struct{}, len(containers))
	for _, c := range containers {
		seen[c.ID] = struct{}{}
		if bound[c.ID] || c.HostID != r.cfg.HostID || c.State == "removing" {
			continue
		}
		rep.Orphans++
		if err := r.orphan(ctx, c, rep); err != nil {
			errs = append(errs, err)
		}
	}
	for id := range r.reported { // forget containers that are gone
		if _, ok := seen[id]; !ok {
			delete(r.reported, id)
		}
	}
	return errors.Join(errs...)
}

// Observed is what a repair sees of a record's container.
type Observed struct {
	Found     bool
	State     string // Docker's state: running, exited, …
	ExitCode  int
	OOMKilled bool
	StartedAt time.Time
	// FinishedAt is the daemon's time of the last exit; zero when unknown.
	FinishedAt time.Time
}

// ObservedFrom describes c (found reports whether the container exists).
func ObservedFrom(c engine.Container, found bool) Observed {
	if !found {
		return Observed{}
	}
	return Observed{Found: true, State: c.State, ExitCode: c.ExitCode, OOMKilled: c.OOMKilled, StartedAt: c.StartedAt, FinishedAt: c.FinishedAt}
}

func needsRepair(rec runtime.RuntimeRecord, c engine.Container, found bool) bool {
	_, d, _ := Decide(&rec, ObservedFrom(c, found), time.Now())
	return d.Reason != ""
}

// Decide is the reconciler's pure decision for one live record given what
// Docker says of its current container. It returns the next record and the
// details of the transition, with an empty Reason (and cur unchanged) when
// there is nothing to repair or the state is ambiguous.
func Decide(cur *runtime.RuntimeRecord, o Observed, at time.Time) (runtime.RuntimeRecord, outbox.TransitionDetails, error) {
	if cur == nil {
		return runtime.RuntimeRecord{}, outbox.TransitionDetails{}, runtime.ErrNotFound
	}
	rec := *cur
	if rec.Status.IsTerminal() || rec.CurrentContainerID == "" {
		return rec, outbox.TransitionDetails{}, nil
	}
	if !o.Found {
		next, err := rec.Remove(rec.CurrentContainerID, at)
		if err != nil {
			return rec, outbox.TransitionDetails{}, err
		}
		return next, outbox.TransitionDetails{Reason: outbox.ReasonReconcileDispose}, nil
	}
	switch {
	case rec.Status == runtime.StatusRunning && (o.State == "exited" || o.State == "dead"):
		code := o.ExitCode
		next, err := rec.Stop(rec.CurrentContainerID, daemonTime(o.FinishedAt, at))
		if err != nil {
			return rec, outbox.TransitionDetails{}, err
		}
		return next, outbox.TransitionDetails{Reason: outbox.ReasonReconcileExit, ExitCode: &code, OOM: o.OOMKilled}, nil
	case rec.Status == runtime.StatusStopped && (o.State == "running" || o.State == "paused"):
		next, err := rec.ObserveStart(rec.CurrentContainerID, daemonTime(o.StartedAt, at))
		if err != nil {
			return rec, outbox.TransitionDetails{}, err
		}
		return next, outbox.TransitionDetails{Reason: outbox.ReasonReconcileStart}, nil
	default:
		// In agreement, or restarting / removing / created: a later event
		// or pass settles it.
		return rec, outbox.TransitionDetails{}, nil
	}
}

// daemonTime returns t (a daemon time) at the database's precision, or at
// when t is unknown.
func daemonTime(t, at time.Time) time.Time {
	if t.IsZero() {
		return at
	}
	return t.UTC().Truncate(time.Microsecond)
}

// repair re-inspects the record's container under the game's lock and
// commits what Decide says. It returns the reason of the committed
// transition, "" when there was nothing to do by then.
//
// A game with a job in progress is left alone: the job is changing its
// container (the record lags behind Docker until it commits), or did so in
// an attempt that ended before its commit, and its next attempt commits
// the transition as the job's; a repair would report the job's own change
// as a repair. The store checks for one after the inspect, under the
// game's lock (see db.Store.RepairRecord). If the job dies, its lease
// expires and it runs again; once it has finished, a later pass sees the
// game idle and repairs what is left.
//
// With a grace, an exit or a start Docker dates less than grace ago is left
// for its event: the watcher reports it as observed_*, and a pass that
// raced it would report the same change as a repair.
func (r *Reconciler) repair(ctx context.Context, listed runtime.RuntimeRecord, grace time.Duration) (outbox.Reason, error) {
	var reason outbox.Reason
	ch, busy, err := r.store.RepairRecord(ctx, r.cfg.HostID, listed.GameID, func(cur *runtime.RuntimeRecord, at time.Time) (runtime.RuntimeRecord, outbox.TransitionDetails, error) {
		reason = ""
		if cur == nil {
			return runtime.RuntimeRecord{}, outbox.TransitionDetails{}, runtime.ErrNotFound
		}
		if cur.HostID != r.cfg.HostID || cur.Status.IsTerminal() || cur.CurrentContainerID == "" {
			return *cur, outbox.TransitionDetails{}, nil
		}
		c, err := r.eng.InspectContainer(ctx, cur.CurrentContainerID)
		found := err == nil
		if err != nil && !errors.Is(err, engine.ErrNotFound) {
			return *cur, outbox.TransitionDetails{}, err
		}
		if !found && r.sweeping(cur.CurrentContainerID) {
			return *cur, outbox.TransitionDetails{}, nil
		}
		next, d, err := Decide(cur, ObservedFrom(c, found), at)
		if grace > 0 && err == nil && r.fresh(d.Reason, c, grace) {
			return *cur, outbox.TransitionDetails{}, nil
		}
		reason = d.Reason
		if err == nil && IsCrash(next, d) {
			d.Crash = CaptureCrash(ctx, r.eng, r.cfg.Crash, next, d, r.log)
		}
		return next, d, err
	})
	if err != nil {
		return "", fmt.Errorf("reconcile game %s: %w", listed.GameID, err)
	}
	if busy || !ch.Changed {
		return "", nil
	}
	r.log.Info("record repaired", "game_id", listed.GameID, "container_id", listed.CurrentContainerID,
		"reason", reason, "from", listed.Status, "to", ch.Record.Status)
	return reason, nil
}

// fresh reports whether the change a repair of reason would report happened
// less than grace ago, by the daemon's times of c.
func (r *Reconciler) fresh(reason outbox.Reason, c engine.Container, grace time.Duration) bool {
	var when time.Time
	switch reason {
	case outbox.ReasonReconcileExit:
		when = c.FinishedAt
	case outbox.ReasonReconcileStart:
		when = c.StartedAt
	default:
		return false // a container gone leaves no time
	}
	return !when.IsZero() && r.now().Sub(when) < grace
}

// sweeping reports whether the sweeper of this agent is removing the
// container: between its remove and its commit the container is gone and
// the record still stopped, and a dispose here would report the sweeper's
// cleanup as a repair. If the sweeper's commit fails, the intent expires
// and a later pass disposes.
func (r *Reconciler) sweeping(containerID string) bool {
	if r.cfg.Intents == nil {
		return false
	}
	_, ok := r.cfg.Intents.Lookup(containerID, intent.Cleanup)
	return ok
}

// orphan reports c once and removes it after the grace period.
func (r *Reconciler) orphan(ctx context.Context, c engine.Container, rep *Report) error {
	var (
		check   db.OrphanCheck
		checked bool
	)
	if _, done := r.reported[c.ID]; !done {
		wrote, ch, err := r.store.ReportOrphan(ctx, outbox.OrphanPayload{
			HostID: r.cfg.HostID, GameID: c.GameID, ContainerID: c.ID, ContainerName: c.Name, At: r.now(),
		}, r.stillThere(c.ID))
		if err != nil {
			return err
		}
		check, checked = ch, true
		if !ch.Orphan() {
			rep.Skipped++
			return nil
		}
		r.reported[c.ID] = struct{}{}
		if wrote {
			rep.OrphansReported++
			r.mOrphans.Add(ctx, 1, metric.WithAttributes(attribute.String("action", "reported")))
			r.log.Warn("orphaned container", "container_id", c.ID, "container_name", c.Name, "game_id", c.GameID, "state", c.State)
		}
	}
	if r.cfg.OrphanGrace < 0 || c.CreatedAt.IsZero() || r.now().Sub(c.CreatedAt) < r.cfg.OrphanGrace {
		return nil
	}
	if !checked {
		var err error
		if check, err = r.store.CheckOrphan(ctx, r.cfg.HostID, c.GameID, c.ID); err != nil {
			return err
		}
	}
	if !check.Orphan() {
		rep.Skipped++
		return nil
	}
	if err := r.eng.RemoveContainer(ctx, c.ID); err != nil {
		return fmt.Errorf("remove orphaned container %s: %w", c.ID, err)
	}
	rep.OrphansRemoved++
	r.mOrphans.Add(ctx, 1, metric.WithAttributes(attribute.String("action", "removed")))
	r.log.Warn("orphaned container removed", "container_id", c.ID, "container_name", c.Name, "game_id", c.GameID,
		"age", r.now().Sub(c.CreatedAt))
	return nil
}

// stillThere asks Docker whether the container the pass listed still
// exists (and is not being removed): see db.Store.ReportOrphan.
func (r *Reconciler) stillThere(containerID string) func(context.Context) (bool, error) {
	return func(ctx context.Context) (bool, error) {
		c, err := r.eng.InspectContainer(ctx, containerID)
		switch {
		case errors.Is(err, engine.ErrNotFound):
			return false, nil
		case err != nil:
			return false, err
		}
		return c.State != "removing", nil
	}
}
