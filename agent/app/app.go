// Package app assembles the agent: it connects to PostgreSQL and Docker,
// registers the host, and runs the job worker, the events watcher, the
// reconciler, the cleanup sweeper and the heartbeat side by side until it
// is told to stop, then drains.
package app

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/exaring/otelpgx"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/galaxy/rtmanager/agent/config"
	"github.com/galaxy/rtmanager/agent/engine"
	"github.com/galaxy/rtmanager/agent/executor"
	"github.com/galaxy/rtmanager/agent/health"
	"github.com/galaxy/rtmanager/agent/intent"
	"github.com/galaxy/rtmanager/agent/liveness"
	"github.com/galaxy/rtmanager/agent/reconcile"
	"github.com/galaxy/rtmanager/agent/sweeper"
	"github.com/galaxy/rtmanager/agent/telemetry"
	"github.com/galaxy/rtmanager/agent/watcher"
	"github.com/galaxy/rtmanager/agent/worker"
	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/domain/job"
)

// Policy returns the job policy the configuration describes.
func Policy(cfg *config.Config) job.Policy {
	p := job.DefaultPolicy()
	p.AllowedImages = cfg.AllowedImages
	p.StateRoot = cfg.StateRoot
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
	if err := prepareSchema(ctx, cfg, log); err != nil {
		return err
	}
	pool, err := db.Connect(ctx, cfg.DatabaseURL, func(pc *pgxpool.Config) {
		pc.ConnConfig.Tracer = otelpgx.NewTracer()
		pc.MaxConns = int32(max(cfg.Concurrency+6, 10))
	})
	if err != nil {
		return err
	}
	defer pool.Close()
	store := db.NewStore(pool, nil)

	docker, err := engine.New(engine.Options{
		Host: cfg.DockerHost, HostID: cfg.HostID, CallTimeout: 30 * time.Second, TracerProvider: tel.TracerProvider,
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

	agentID := newAgentID(cfg.HostID)
	if _, err := store.RegisterHost(ctx, cfg.HostID, agentID, version); err != nil {
		return err
	}
	heartbeat, err := liveness.NewHeartbeater(store, cfg.HostID, agentID, cfg.HeartbeatInterval, log)
	if err != nil {
		return err
	}
	intents := intent.New(10*time.Minute, nil)
	exec := executor.New(docker, intents, executor.Config{Records: store, StateRoot: cfg.StateRoot, Logger: log})
	work := worker.New(store, exec, intents, worker.Config{
		HostID: cfg.HostID, Owner: agentID, Concurrency: cfg.Concurrency,
		LeaseDuration: cfg.LeaseDuration, PollInterval: cfg.PollInterval, UseListen: cfg.UseListen,
		Policy: policy, Network: cfg.DockerNetwork, Logger: log, DrainTimeout: cfg.DrainTimeout,
	})
	rec := reconcile.New(store, docker, reconcile.Config{
		HostID: cfg.HostID, Interval: cfg.ReconcileInterval, OrphanGrace: cfg.OrphanGrace, Logger: log,
	})
	watch := watcher.New(store, docker, rec, intents, watcher.Config{
		HostID: cfg.HostID, IdleTimeout: cfg.EventsIdleTimeout, Logger: log,
	})
	sweep, err := sweeper.New(store, docker, intents, sweeper.Config{
		HostID: cfg.HostID, Schedule: cfg.SweepSchedule, StoppedTTL: cfg.StoppedTTL,
		JobRetention: cfg.JobRetention, OutboxRetention: cfg.OutboxRetention, Logger: log,
	})
	if err != nil {
		return err
	}

	checks := []health.Check{
		{Name: "database", Func: func(ctx context.Context) error {
			if err := pool.Ping(ctx); err != nil {
				return fmt.Errorf("cannot reach PostgreSQL: %w", err)
			}
			return store.CheckSchema(ctx)
		}},
		{Name: "docker events stream", Func: func(context.Context) error {
			if !watch.Connected() {
				return errors.New("not connected to the Docker daemon's events stream")
			}
			return nil
		}},
	}
	var srv *http.Server
	if cfg.HTTPAddr != "" {
		ln, err := net.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			return fmt.Errorf("listen on RTM_HTTP_ADDR %s: %w", cfg.HTTPAddr, err)
		}
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

	log.Info("agent started", "host_id", cfg.HostID, "agent_id", agentID, "version", version,
		"database", db.Redact(cfg.DatabaseURL), "docker_api", docker.APIVersion(), "schema_version", db.SchemaVersion,
		"http_addr", cfg.HTTPAddr, "concurrency", cfg.Concurrency, "listen", cfg.UseListen)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return named("heartbeat", heartbeat.Run(gctx)) })
	g.Go(func() error { return named("reconciler", rec.Run(gctx)) })
	g.Go(func() error { return named("events watcher", watch.Run(gctx)) })
	g.Go(func() error { return named("job worker", work.Run(gctx)) })
	g.Go(func() error { return named("sweeper", sweep.Run(gctx)) })
	g.Go(func() error { return notifySystemd(gctx, log) })

	err = g.Wait()
	_, _ = daemon.SdNotify(false, daemon.SdNotifyStopping)
	if err != nil && ctx.Err() == nil {
		return err
	}
	log.Info("agent stopped", "host_id", cfg.HostID)
	return nil
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

// prepareSchema migrates the database, or checks that it was migrated.
func prepareSchema(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	if cfg.AutoMigrate {
		return db.MigrateUp(ctx, cfg.DatabaseURL, db.MigrateOptions{LockTimeout: cfg.MigrateLockTimeout, Logger: log})
	}
	v, dirty, err := db.MigrationVersion(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	if dirty || v != db.SchemaVersion {
		return fmt.Errorf("the database schema is at version %d (dirty=%v) but this build needs %d: run `rtmanager migrate up`, or start with --auto-migrate", v, dirty, db.SchemaVersion)
	}
	return nil
}

// newAgentID names this process: host, pid and a random part, so that a
// restarted agent is told apart from the one before it.
func newAgentID(hostID string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s/%d/%s", hostID, os.Getpid(), hex.EncodeToString(b[:]))
}
