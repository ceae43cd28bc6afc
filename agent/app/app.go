// Package app assembles the agent: it connects to PostgreSQL and Docker,
// waits for its host's lease (agent/leader: one active agent per host, the
// others stand by), and while it holds it runs the job worker, the events
// watcher, the reconciler and the cleanup sweeper side by side until it is
// told to stop, then drains and releases the lease. Losing the lease
// cancels them all and makes the agent a standby again.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/exaring/otelpgx"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/galaxy/rtmanager/agent/config"
	"github.com/galaxy/rtmanager/agent/engine"
	"github.com/galaxy/rtmanager/agent/executor"
	"github.com/galaxy/rtmanager/agent/health"
	"github.com/galaxy/rtmanager/agent/imageuse"
	"github.com/galaxy/rtmanager/agent/intent"
	"github.com/galaxy/rtmanager/agent/leader"
	"github.com/galaxy/rtmanager/agent/liveness"
	"github.com/galaxy/rtmanager/agent/reconcile"
	"github.com/galaxy/rtmanager/agent/sweeper"
	"github.com/galaxy/rtmanager/agent/telemetry"
	"github.com/galaxy/rtmanager/agent/watcher"
	"github.com/galaxy/rtmanager/agent/worker"
	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/domain/crash"
	"github.com/galaxy/rtmanager/internal/domain/job"
)

// Policy returns the job policy the configuration describes.
func Policy(cfg *config.Config) job.Policy {
	p := job.DefaultPolicy()
	p.AllowedImages = cfg.AllowedImages
	p.StateRoot = cfg.StateRoot
	if cfg.ReadyTimeout > 0 {
		p.DefaultReadyTimeout = cfg.ReadyTimeout
	}
	return p
}

// Run runs the agent until ctx ends (a signal) or a part of it cannot go
// on. Start-up problems (database, schema, Docker) are returned with what
// to fix; a clean stop returns nil.
func Run(ctx context.Context, cfg *config.Config, log *slog.Logger, version string) (err error) {
	tel, err := telemetry.Setup(ctx, telemetry.Config{ServiceVersion: version, HostID: cfg.HostID})
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if serr := tel.Shutdown(sctx); serr != nil {
			log.Warn("flushing telemetry", "err", serr)
		}
	}()
	log = slog.New(telemetry.LogHandler(log.Handler()))

	policy := Policy(cfg)
	if err := policy.Validate(); err != nil {
		return fmt.Errorf("job policy: %w", err)
	}
	if cfg.AutoMigrate {
		if err := db.MigrateUp(ctx, cfg.MigrateURL(), db.MigrateOptions{LockTimeout: cfg.MigrateLockTimeout, Logger: log}); err != nil {
			return err
		}
	}
	pool, err := db.Connect(ctx, cfg.DatabaseURL, func(pc *pgxpool.Config) {
		pc.ConnConfig.Tracer = otelpgx.NewTracer()
		pc.MaxConns = int32(max(cfg.Concurrency+6, 10))
		ConfigurePool(pc, cfg)
	})
	if err != nil {
		return err
	}
	defer pool.Close()
	store := db.NewStore(pool, nil)
	if err := store.CheckSchema(ctx); err != nil {
		if cfg.AutoMigrate {
			return err
		}
		return fmt.Errorf("%w: run `rtmanager migrate up`, or start with --auto-migrate", err)
	}

	docker, err := engine.New(engine.Options{
		Host: cfg.DockerHost, HostID: cfg.HostID, CallTimeout: 30 * time.Second, TracerProvider: tel.TracerProvider,
		PullTimeout: cfg.PullTimeout, PullAttempts: cfg.PullAttempts,
	})
	if err != nil {
		return fmt.Errorf("configure the Docker client: %w", err)
	}
	defer docker.Close()
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = docker.Ping(pingCtx)
	cancel()
	if err != nil {
		return fmt.Errorf("cannot reach the Docker daemon (%v): start dockerd, or point RTM_DOCKER_HOST (or DOCKER_HOST) at it", err)
	}

	agentID := leader.NewAgentID(cfg.HostID)
	lease := leader.New(store, leader.Config{
		HostID: cfg.HostID, AgentID: agentID, Version: version,
		TTL: cfg.HostLeaseTTL, PollInterval: cfg.HostLeasePoll, IsDead: leader.DeadOnThisMachine,
		// The renewal is also the host's heartbeat.
		RenewInterval: min(cfg.HostLeaseTTL/3, cfg.HeartbeatInterval),
		Logger:        log,
	})
	unregister, err := liveness.RegisterFleetMetrics(store, lease.Active, log)
	if err != nil {
		return fmt.Errorf("register fleet metrics: %w", err)
	}
	defer func() { _ = unregister() }()

	// The parts of the current active term; nil while standing by.
	var current atomic.Pointer[parts]
	checks := []health.Check{
		{Name: "database", Func: func(ctx context.Context) error {
			if err := pool.Ping(ctx); err != nil {
				return fmt.Errorf("cannot reach PostgreSQL: %w", err)
			}
			return store.CheckSchema(ctx)
		}},
		{Name: "docker events stream", Func: func(context.Context) error {
			p := current.Load()
			if p != nil && !p.watch.Connected() {
				return errors.New("not connected to the Docker daemon's events stream")
			}
			return nil // connected, or a standby, which watches nothing
		}},
	}
	var srv *http.Server
	httpAddr := "" // the address really listened on (cfg's may end in :0)
	if cfg.HTTPAddr != "" {
		ln, err := net.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			return fmt.Errorf("listen on RTM_HTTP_ADDR %s: %w", cfg.HTTPAddr, err)
		}
		httpAddr = ln.Addr().String()
		srv = &http.Server{Handler: health.Handler(checks, tel.MetricsHandler), ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("HTTP server stopped", "err", err)
			}
		}()
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		}()
	}

	// One attempt now, so that the host is registered (or known to be
	// held by another agent) by the time the agent says it started.
	active, err := lease.TryAcquire(ctx)
	if err != nil {
		log.Warn("acquiring the host lease failed; retrying", "err", err)
	}

	log.Info("agent started", "active", active, "host_id", cfg.HostID, "agent_id", agentID, "version", version,
		"database", db.Redact(cfg.DatabaseURL), "docker_api", docker.APIVersion(), "schema_version", db.SchemaVersion,
		"http_addr", httpAddr, "concurrency", cfg.Concurrency, "listen", cfg.UseListen, "pooler_mode", cfg.PoolerMode,
		"host_lease_ttl", lease.Config().TTL, "takeover_within", lease.HandoverBound())

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		// Everything that acts on the host runs only while this agent
		// holds the host's lease; a fenced term cancels it all.
		return lease.Run(gctx, func(tctx context.Context) error {
			p, err := newParts(cfg, log, store, docker, policy, agentID)
			if err != nil {
				return err
			}
			current.Store(p)
			defer current.Store(nil)
			return p.run(tctx)
		})
	})
	g.Go(func() error { return notifySystemd(gctx, log) })

	err = g.Wait()
	_, _ = daemon.SdNotify(false, daemon.SdNotifyStopping)
	if err != nil && ctx.Err() == nil {
		return err
	}
	log.Info("agent stopped", "host_id", cfg.HostID)
	return nil
}

// ConfigurePool adapts a pool to the configured pooler mode. Behind a
// transaction pooler a session's server connection changes between
// transactions, so named server-side prepared statements (pgx's default
// statement cache) cannot be used: the pool describes each statement once
// and then runs it as an unnamed statement, every time in one round trip
// (pgx's QueryExecModeCacheDescribe).
func ConfigurePool(pc *pgxpool.Config, cfg *config.Config) {
	if cfg.TransactionPooler() {
		pc.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeCacheDescribe
	}
}

// parts are what an active agent runs on its host; a new set for every
// term of the host lease.
type parts struct {
	work  *worker.Worker
	rec   *reconcile.Reconciler
	watch *watcher.Watcher
	sweep *sweeper.Sweeper
}

func newParts(cfg *config.Config, log *slog.Logger, store *db.Store, docker *engine.Docker, policy job.Policy, agentID string) (*parts, error) {
	intents := intent.New(10*time.Minute, nil)
	images := imageuse.New(nil)
	exec := executor.New(docker, executor.Config{Records: store, StateRoot: cfg.StateRoot, Logger: log, Images: images,
		Crash: crash.Limits{Lines: cfg.CrashLines, Bytes: cfg.CrashBytes}, Health: store})
	poll := cfg.PollInterval
	if cfg.UseListen {
		// Notifications wake the worker: polling is only a safety net.
		poll = max(cfg.ListenPollInterval, cfg.PollInterval)
	}
	p := &parts{}
	p.work = worker.New(store, exec, worker.Config{
		HostID: cfg.HostID, Owner: agentID, Concurrency: cfg.Concurrency, Prefetch: cfg.Prefetch,
		LeaseDuration: cfg.LeaseDuration, PollInterval: poll, UseListen: cfg.UseListen,
		Policy: policy, Network: cfg.DockerNetwork, Logger: log, DrainTimeout: cfg.DrainTimeout,
		// Expired job leases of this host are requeued when the agent
		// becomes active; later only this agent's own lost leases can
		// expire, so a slow period keeps the idle cost down.
		RescueInterval: max(2*time.Minute, cfg.LeaseDuration),
	})
	p.rec = reconcile.New(store, docker, reconcile.Config{
		HostID: cfg.HostID, Interval: cfg.ReconcileInterval, OrphanGrace: cfg.OrphanGrace, Intents: intents, Logger: log,
		Crash: crash.Limits{Lines: cfg.CrashLines, Bytes: cfg.CrashBytes},
	})
	p.watch = watcher.New(store, docker, p.rec, intents, watcher.Config{
		HostID: cfg.HostID, IdleTimeout: cfg.EventsIdleTimeout, Logger: log,
		Crash: crash.Limits{Lines: cfg.CrashLines, Bytes: cfg.CrashBytes},
	})
	var gc *sweeper.ImageGCConfig
	if cfg.ImageGC {
		gc = &sweeper.ImageGCConfig{
			Images: docker, AllowedImages: policy.AllowedImages, Guard: images,
			MaxUnused: cfg.ImageGCMaxUnused, MinAge: cfg.ImageGCMinAge,
			HighPercent: cfg.ImageGCHigh, LowPercent: cfg.ImageGCLow, BudgetBytes: cfg.ImageGCBudgetBytes,
		}
	}
	var err error
	p.sweep, err = sweeper.New(store, docker, intents, sweeper.Config{
		HostID: cfg.HostID, Schedule: cfg.SweepSchedule, StoppedTTL: cfg.StoppedTTL,
		JobRetention: cfg.JobRetention, OutboxRetention: cfg.OutboxRetention,
		CrashRetention: cfg.CrashRetention, Logger: log, ImageGC: gc,
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// run runs the parts until ctx ends or one of them fails.
func (p *parts) run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return named("reconciler", p.rec.Run(gctx)) })
	g.Go(func() error { return named("events watcher", p.watch.Run(gctx)) })
	g.Go(func() error { return named("job worker", p.work.Run(gctx)) })
	g.Go(func() error { return named("sweeper", p.sweep.Run(gctx)) })
	return g.Wait()
}

func named(part string, err error) error {
	if err == nil || errors.Is(err, context.Canceled) {
		return nil
	}
	return fmt.Errorf("%s: %w", part, err)
}

// notifySystemd tells systemd (Type=notify) that the agent is ready, and
// keeps its watchdog fed while the process runs. Outside systemd both are
// no-ops.
func notifySystemd(ctx context.Context, log *slog.Logger) error {
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		log.Warn("telling systemd the agent is ready", "err", err)
	}
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil || interval <= 0 {
		<-ctx.Done()
		return nil
	}
	tick := time.NewTicker(interval / 3)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			_, _ = daemon.SdNotify(false, daemon.SdNotifyWatchdog)
		}
	}
}
