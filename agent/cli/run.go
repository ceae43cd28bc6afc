package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/galaxy/rtmanager/agent/config"
	"github.com/galaxy/rtmanager/agent/engine"
	"github.com/galaxy/rtmanager/internal/db"
)

func cmdRun(ctx context.Context, e *env, args []string) int {
	var cfg config.Config
	if _, code, ok := parse(e, "run", "[flags]", args, &cfg, config.Database, config.Agent, config.Logging); !ok {
		return code
	}
	log := newLogger(e.stderr, &cfg)
	if err := runAgent(ctx, &cfg, log); err != nil {
		return fail(e, "run", err)
	}
	return ExitOK
}

// runAgent starts the agent and blocks until ctx ends (a signal) or the
// agent cannot go on.
func runAgent(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	if err := prepareSchema(ctx, cfg, log); err != nil {
		return err
	}
	pool, err := db.Connect(ctx, cfg.DatabaseURL, nil)
	if err != nil {
		return err
	}
	defer pool.Close()
	store := db.NewStore(pool, nil)

	docker, err := engine.New(engine.Options{Host: cfg.DockerHost, HostID: cfg.HostID, CallTimeout: 30 * time.Second})
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
	if _, err := store.RegisterHost(ctx, cfg.HostID, agentID, Version); err != nil {
		return err
	}
	log.Info("agent started", "host_id", cfg.HostID, "agent_id", agentID, "version", Version,
		"database", db.Redact(cfg.DatabaseURL), "docker_api", docker.APIVersion(), "schema_version", db.SchemaVersion)

	tick := time.NewTicker(cfg.HeartbeatInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			log.Info("agent stopping", "host_id", cfg.HostID)
			return nil
		case <-tick.C:
			if err := store.Heartbeat(ctx, cfg.HostID, agentID); err != nil {
				if errors.Is(err, db.ErrHostTaken) {
					return fmt.Errorf("%w: another agent registered for host %s; two agents must not serve one host", err, cfg.HostID)
				}
				if ctx.Err() == nil {
					log.Warn("heartbeat failed; retrying at the next interval", "err", err)
				}
			}
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
