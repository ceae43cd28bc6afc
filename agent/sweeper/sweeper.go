// Package sweeper is the agent's cleanup sweeper. On a cron schedule it
// removes the containers of games stopped for longer than a TTL and marks
// their records removed (reason cleanup), and it prunes finished jobs and
// outbox rows older than their retention.
//
// Safety rules:
//
//   - One agent at a time sweeps a host's records: a pass takes a per-host
//     advisory try-lock and, when another session holds it, skips the
//     cleanup and says so in its Report. Retention is global and has a
//     try-lock of its own, so only one agent prunes at a time.
//   - A game with a queued or running job is never swept; the check is
//     repeated just before its container is removed.
//   - Each game is handled on its own: the container is removed first
//     (idempotently: a container already gone is fine), then the record's
//     removal commits with its outbox event in one transaction. A pass
//     interrupted between the two leaves a stopped record whose container
//     is gone; the next pass selects it again, the remove finds nothing to
//     do and the record is committed then. Running a pass again is always
//     safe.
//   - A stopped record without a container id has nothing to remove in
//     Docker; only its record is moved to removed.
//   - The job check and the Docker remove are not one atomic step: a job
//     claimed in the few milliseconds between them can find the container
//     gone. The record then tells the truth either way: the cleanup commit
//     refuses a record that moved meanwhile (db.ErrRecordMoved, nothing
//     written), and otherwise records the removal, so a later start job
//     fails with runtime.ErrRemoved instead of acting on a container that
//     no longer exists. Closing the window completely needs the executor
//     to hold the game's lock around its Docker calls.
//
// Retention of outbox rows waits for every consumer registered in the
// outbox_consumers table to have read past a row. With no consumer
// registered, rows are deleted by age alone: a reader that does not
// register must keep up within the retention or it misses events.
package sweeper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/galaxy/rtmanager/agent/engine"
	"github.com/galaxy/rtmanager/agent/intent"
	"github.com/galaxy/rtmanager/agent/telemetry"
	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/domain/runtime"
)

// DefaultBatchSize is the batch size when Config.BatchSize is 0.
const DefaultBatchSize = 100

// Setting names, used in errors so that an operator knows what to fix.
const (
	SettingSchedule        = "RTM_SWEEP_SCHEDULE"
	SettingStoppedTTL      = "RTM_SWEEP_STOPPED_TTL"
	SettingBatchSize       = "RTM_SWEEP_BATCH_SIZE"
	SettingJobRetention    = "RTM_JOB_RETENTION"
	SettingOutboxRetention = "RTM_OUTBOX_RETENTION"
	SettingCrashRetention  = "RTM_CRASH_RETENTION"
)

// Config configures a sweeper.
type Config struct {
	// HostID is the host whose records this agent sweeps.
	HostID string
	// Schedule is a cron spec: five fields ("minute hour dom month dow"),
	// a descriptor (@hourly, @daily, …) or @every <duration>.
	Schedule string
	// StoppedTTL is how long a game may stay stopped before its container
	// is removed, counted from the record's last operation. 0 disables
	// the cleanup.
	StoppedTTL time.Duration
	// BatchSize bounds the records read, and the rows deleted, per
	// statement. 0 means DefaultBatchSize.
	BatchSize int
	// JobRetention is how long finished jobs are kept; 0 keeps them.
	JobRetention time.Duration
	// OutboxRetention is how long outbox rows are kept at least; 0 keeps
	// them.
	OutboxRetention time.Duration
	// CrashRetention is how long crash reports are kept; 0 keeps them
	// (a game keeps at most its last ten in any case).
	CrashRetention time.Duration
	// Logger receives a line per pass and per failure; nil means
	// slog.Default().
	Logger *slog.Logger
	// ImageGC, when set, collects unused engine images in every pass
	// (see imagegc.go).
	ImageGC *ImageGCConfig
}

// Report says what one pass did.
type Report struct {
	// Skipped reports that another agent was sweeping this host's records,
	// so this pass did no cleanup.
	Skipped bool
	// RetentionSkipped reports that another agent was pruning, so this
	// pass pruned nothing.
	RetentionSkipped bool
	// Selected counts the expired stopped records the pass looked at.
	Selected int
	// Removed counts the records this pass moved to removed.
	Removed int
	// Passed counts selected records left alone because they changed,
	// got a job or were already removed by someone else.
	Passed int
	// Failed counts records whose removal failed; the next pass tries
	// them again.
	Failed int
	// JobsDeleted, OutboxDeleted and CrashReportsDeleted count the rows
	// retention deleted.
	JobsDeleted         int64
	OutboxDeleted       int64
	CrashReportsDeleted int64
	// Images is what image garbage collection did.
	Images ImageGCReport
}

// Sweeper runs sweep passes for one host.
type Sweeper struct {
	store    *db.Store
	eng      engine.Engine
	intents  *intent.Registry
	cfg      Config
	schedule cron.Schedule
	log      *slog.Logger
	gc       *imageGC // nil: no image collection
}

var parser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// ParseSchedule parses a cron spec in the standard five-field form or a
// descriptor such as @every 10m or @daily.
func ParseSchedule(spec string) (cron.Schedule, error) {
	if strings.TrimSpace(spec) == "" {
		return nil, fmt.Errorf("%s is empty: set it to a cron schedule such as \"*/10 * * * *\" or \"@every 10m\"", SettingSchedule)
	}
	s, err := parser.Parse(spec)
	if err != nil {
		return nil, fmt.Errorf("%s %q is not a valid cron schedule (want five fields \"minute hour day-of-month month day-of-week\", or @every <duration>, @hourly, @daily, …): %w", SettingSchedule, spec, err)
	}
	if s.Next(time.Now()).IsZero() {
		return nil, fmt.Errorf("%s %q never fires (no such date within five years)", SettingSchedule, spec)
	}
	return s, nil
}

// New returns a sweeper; it refuses an invalid configuration, naming the
// setting to fix. intents may be nil.
func New(store *db.Store, eng engine.Engine, intents *intent.Registry, cfg Config) (*Sweeper, error) {
	var errs []error
	if store == nil {
		errs = append(errs, errors.New("sweeper: no store"))
	}
	if eng == nil {
		errs = append(errs, errors.New("sweeper: no Docker engine"))
	}
	if strings.TrimSpace(cfg.HostID) == "" {
		errs = append(errs, errors.New("sweeper: no host id"))
	}
	schedule, err := ParseSchedule(cfg.Schedule)
	if err != nil {
		errs = append(errs, err)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{SettingStoppedTTL, cfg.StoppedTTL}, {SettingJobRetention, cfg.JobRetention}, {SettingOutboxRetention, cfg.OutboxRetention}, {SettingCrashRetention, cfg.CrashRetention}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s must not be negative (0 disables it), got %s", d.name, d.v))
		}
	}
	switch {
	case cfg.BatchSize < 0:
		errs = append(errs, fmt.Errorf("%s must be positive, got %d", SettingBatchSize, cfg.BatchSize))
	case cfg.BatchSize == 0:
		cfg.BatchSize = DefaultBatchSize
	}
	var gc *imageGC
	if cfg.ImageGC != nil {
		gcfg := *cfg.ImageGC
		if err := gcfg.validate(); err != nil {
			errs = append(errs, err)
		}
		gc = &imageGC{cfg: gcfg, unusedSince: map[string]time.Time{}}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "sweeper", "host_id", cfg.HostID)
	return &Sweeper{store: store, eng: eng, intents: intents, cfg: cfg, schedule: schedule, log: log, gc: gc}, nil
}

// Run sweeps on the schedule until ctx is done, then returns nil. A pass
// that fails is logged and the next one runs on schedule. Passes never
// overlap.
func (s *Sweeper) Run(ctx context.Context) error {
	for {
		now := time.Now()
		next := s.schedule.Next(now)
		if next.IsZero() {
			return fmt.Errorf("%s %q never fires", SettingSchedule, s.cfg.Schedule)
		}
		timer := time.NewTimer(next.Sub(now))
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-timer.C:
		}
		if _, err := s.Pass(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("sweep pass failed; the next pass tries again", "err", err)
		}
	}
}

// Pass runs one sweep now: cleanup of this host's expired stopped games,
// then retention. The report counts what was done even when an error is
// returned; the error joins every failure of the pass.
func (s *Sweeper) Pass(ctx context.Context) (rep Report, err error) {
	ctx, span := tracer.Start(ctx, "sweep pass", trace.WithAttributes(telemetry.HostID(s.cfg.HostID)))
	defer func() {
		span.SetAttributes(
			attribute.Int("rtmanager.sweep.removed", rep.Removed),
			attribute.Int("rtmanager.sweep.failed", rep.Failed),
			attribute.Int64("rtmanager.sweep.jobs_deleted", rep.JobsDeleted),
			attribute.Int64("rtmanager.sweep.outbox_deleted", rep.OutboxDeleted),
			attribute.Bool("rtmanager.sweep.skipped", rep.Skipped),
			attribute.Int("rtmanager.sweep.images_removed", rep.Images.Removed),
			attribute.Int64("rtmanager.sweep.images_freed", rep.Images.Freed))
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
		metrics.removals.Add(ctx, int64(rep.Removed))
		metrics.deleted.Add(ctx, rep.JobsDeleted, metric.WithAttributes(attribute.String("table", "jobs")))
		metrics.deleted.Add(ctx, rep.OutboxDeleted, metric.WithAttributes(attribute.String("table", "outbox")))
		metrics.deleted.Add(ctx, rep.CrashReportsDeleted, metric.WithAttributes(attribute.String("table", "crash_reports")))
	}()
	var errs []error
	start := time.Now()

	if s.cfg.StoppedTTL > 0 {
		if err := s.cleanup(ctx, &rep); err != nil {
			errs = append(errs, err)
		}
	}
	if s.gc != nil && ctx.Err() == nil {
		var err error
		if rep.Images, err = s.collectImages(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if ctx.Err() == nil && (s.cfg.JobRetention > 0 || s.cfg.OutboxRetention > 0 || s.cfg.CrashRetention > 0) {
		if err := s.retention(ctx, &rep); err != nil {
			errs = append(errs, err)
		}
	}
	err = errors.Join(errs...)
	level := slog.LevelInfo
	if err != nil {
		level = slog.LevelWarn
	}
	s.log.Log(ctx, level, "sweep pass",
		"skipped", rep.Skipped, "retention_skipped", rep.RetentionSkipped,
		"selected", rep.Selected, "removed", rep.Removed, "passed", rep.Passed, "failed", rep.Failed,
		"jobs_deleted", rep.JobsDeleted, "outbox_deleted", rep.OutboxDeleted, "crash_reports_deleted", rep.CrashReportsDeleted,
		"images_removed", rep.Images.Removed, "images_freed", rep.Images.Freed, "images_kept", rep.Images.Kept, "disk_percent", rep.Images.DiskPercent,
		"duration", time.Since(start), "err", err)
	return rep, err
}

var tracer = otel.Tracer("github.com/galaxy/rtmanager/agent/sweeper")

var metrics = func() (m struct{ removals, deleted metric.Int64Counter }) {
	meter := otel.Meter("github.com/galaxy/rtmanager/agent/sweeper")
	m.removals, _ = meter.Int64Counter("rtmanager.sweeper.removals",
		metric.WithDescription("Containers of expired stopped games removed by the cleanup sweep."))
	m.deleted, _ = meter.Int64Counter("rtmanager.sweeper.deleted",
		metric.WithDescription("Rows deleted by retention, by table (jobs, outbox, crash_reports)."))
	return m
}()

// cleanup removes the expired stopped games of the host, batch by batch.
func (s *Sweeper) cleanup(ctx context.Context, rep *Report) error {
	lock, held, err := s.store.TryLockHostSweep(ctx, s.cfg.HostID)
	if err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	if !held {
		rep.Skipped = true
		s.log.Info("cleanup skipped: another agent is sweeping this host's records")
		return nil
	}
	defer lock.Release()

	cutoff := s.store.Now().Add(-s.cfg.StoppedTTL)
	var after db.SweepKey
	var errs []error
	for {
		batch, err := s.store.ListExpiredStopped(ctx, s.cfg.HostID, cutoff, after, s.cfg.BatchSize)
		if err != nil {
			return errors.Join(append(errs, fmt.Errorf("cleanup: %w", err))...)
		}
		for _, rec := range batch {
			if err := ctx.Err(); err != nil {
				return errors.Join(append(errs, fmt.Errorf("cleanup interrupted: %w", err))...)
			}
			rep.Selected++
			if err := s.sweepOne(ctx, rec, cutoff, rep); err != nil {
				rep.Failed++
				errs = append(errs, err)
				s.log.Warn("cleanup of a game failed; the next pass tries again", "game_id", rec.GameID, "err", err)
			}
			after = db.KeyOf(rec)
		}
		if len(batch) < s.cfg.BatchSize {
			return errors.Join(errs...)
		}
	}
}

// sweepOne removes one game's container, then commits its record's
// removal.
func (s *Sweeper) sweepOne(ctx context.Context, rec runtime.RuntimeRecord, cutoff time.Time, rep *Report) error {
	ok, err := s.store.StillExpired(ctx, rec, cutoff)
	if err != nil {
		return fmt.Errorf("cleanup of game %s: %w", rec.GameID, err)
	}
	if !ok {
		rep.Passed++
		s.log.Debug("cleanup passes over a game that changed or got a job", "game_id", rec.GameID)
		return nil
	}
	if id := rec.CurrentContainerID; id != "" {
		if s.intents != nil {
			s.intents.Expect(id, intent.Cleanup)
		}
		// A failed remove leaves its intent to expire: other intents of
		// the container may be pending.
		if err := s.eng.RemoveContainer(ctx, id); err != nil && !errors.Is(err, engine.ErrNotFound) {
			return fmt.Errorf("cleanup of game %s: %w", rec.GameID, err)
		}
	}
	change, err := s.store.CommitCleanup(ctx, rec)
	switch {
	case errors.Is(err, db.ErrRecordMoved), errors.Is(err, runtime.ErrNotFound):
		rep.Passed++
		s.log.Warn("cleanup removed the container but the record changed meanwhile; left to the record's new owner", "game_id", rec.GameID, "container_id", rec.CurrentContainerID, "err", err)
		return nil
	case err != nil:
		return fmt.Errorf("cleanup of game %s: container %s removed, record not yet: %w", rec.GameID, rec.CurrentContainerID, err)
	case !change.Changed:
		rep.Passed++
		return nil
	}
	rep.Removed++
	s.log.Info("cleanup removed a game stopped too long", "game_id", rec.GameID, "container_id", rec.CurrentContainerID,
		"last_op_at", rec.LastOpAt, "event_id", change.EventID)
	return nil
}

// retention prunes finished jobs, read outbox rows and old crash reports,
// under the global retention lock.
func (s *Sweeper) retention(ctx context.Context, rep *Report) error {
	lock, held, err := s.store.TryLockRetention(ctx)
	if err != nil {
		return fmt.Errorf("retention: %w", err)
	}
	if !held {
		rep.RetentionSkipped = true
		s.log.Info("retention skipped: another agent is pruning")
		return nil
	}
	defer lock.Release()
	var errs []error
	if s.cfg.JobRetention > 0 {
		n, err := s.store.DeleteFinishedJobs(ctx, s.cfg.JobRetention, s.cfg.BatchSize)
		rep.JobsDeleted += n
		if err != nil {
			errs = append(errs, fmt.Errorf("retention: %w", err))
		}
	}
	if s.cfg.OutboxRetention > 0 && ctx.Err() == nil {
		n, err := s.store.DeleteReadOutbox(ctx, s.cfg.OutboxRetention, s.cfg.BatchSize)
		rep.OutboxDeleted += n
		if err != nil {
			errs = append(errs, fmt.Errorf("retention: %w", err))
		}
	}
	if s.cfg.CrashRetention > 0 && ctx.Err() == nil {
		n, err := s.store.DeleteOldCrashReports(ctx, s.cfg.CrashRetention, s.cfg.BatchSize)
		rep.CrashReportsDeleted += n
		if err != nil {
			errs = append(errs, fmt.Errorf("retention: %w", err))
		}
	}
	return errors.Join(errs...)
}
