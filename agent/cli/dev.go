package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/galaxy/rtmanager/agent/app"
	"github.com/galaxy/rtmanager/agent/config"
	"github.com/galaxy/rtmanager/agent/engine"
	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/engineimage"
	"github.com/galaxy/rtmanager/internal/pgcluster"
)

// devDatabase is the database `rtmanager dev` creates on its own cluster.
const devDatabase = "rtmanager"

// defaultDevDir is where `rtmanager dev` keeps its database and state
// between runs. As root it is outside /root, because the database runs as
// an unprivileged user who must be able to reach it.
func defaultDevDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/rtmanager/dev"
	}
	if dir := os.Getenv("XDG_DATA_HOME"); dir != "" {
		return filepath.Join(dir, "rtmanager", "dev")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "rtmanager-dev")
	}
	return filepath.Join(home, ".local", "share", "rtmanager", "dev")
}

func cmdDev(ctx context.Context, e *env, args []string) int {
	var cfg config.Config
	var dataDir string
	var reset bool
	extra := func(fs *flag.FlagSet) {
		fs.StringVar(&dataDir, "data-dir", envOr("RTM_DEV_DIR", defaultDevDir()),
			"where the dev database and game state live between runs (env RTM_DEV_DIR)")
		fs.BoolVar(&reset, "reset", false, "delete the dev database and state first, and start afresh")
	}
	if _, code, ok := parseWith(e, "dev", "[flags]", args, &cfg, extra, config.Agent, config.Logging); !ok {
		return code
	}
	cfg.DatabaseURL = os.Getenv("RTM_DATABASE_URL")
	cfg.AutoMigrate = true
	cfg.MigrateLockTimeout = db.DefaultMigrateLockTimeout
	if os.Getenv("RTM_STATE_ROOT") == "" && !flagGiven(args, "state-root") {
		cfg.StateRoot = filepath.Join(dataDir, "state")
	}
	if os.Getenv("RTM_DOCKER_NETWORK") == "" && !flagGiven(args, "docker-network") {
		cfg.DockerNetwork = "galaxy-dev"
	}
	log := newLogger(e.stderr, &cfg)

	if reset {
		if err := os.RemoveAll(dataDir); err != nil {
			return fail(e, "dev", fmt.Errorf("reset %s: %w", dataDir, err))
		}
	}
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return fail(e, "dev", fmt.Errorf("create %s: %w (choose another place with --data-dir)", dataDir, err))
	}

	if cfg.DatabaseURL == "" {
		cluster, err := startDevCluster(ctx, dataDir)
		if err != nil {
			return fail(e, "dev", err)
		}
		defer func() {
			if err := cluster.Stop(); err != nil {
				log.Warn("stopping the dev database", "err", err)
			}
		}()
		cfg.DatabaseURL = cluster.URL(devDatabase)
	}

	docker, err := engine.New(engine.Options{Host: cfg.DockerHost, HostID: cfg.HostID})
	if err != nil {
		return fail(e, "dev", fmt.Errorf("configure the Docker client: %w", err))
	}
	defer docker.Close()
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = docker.Ping(pingCtx)
	cancel()
	if err != nil {
		return fail(e, "dev", fmt.Errorf("cannot reach the Docker daemon (%v): start it (e.g. `sudo systemctl start docker`, or `sudo dockerd &`), or point DOCKER_HOST at it", err))
	}
	imageRef, err := engineimage.Build(ctx, docker, engineimage.DefaultRepo)
	if err != nil {
		log.Warn("could not build the demo engine image; jobs need an image of your own", "err", err)
	}
	if len(cfg.AllowedImages) == 0 {
		cfg.AllowedImages = []string{engineimage.DefaultRepo}
	}

	if code, ok := checkAgentConfig(e, "dev", &cfg); !ok {
		return code
	}
	printDevBanner(e.stdout, &cfg, dataDir, imageRef)
	if err := app.Run(ctx, &cfg, log, Version); err != nil {
		return fail(e, "dev", err)
	}
	return ExitOK
}

func startDevCluster(ctx context.Context, dataDir string) (*pgcluster.Cluster, error) {
	logFile, err := os.OpenFile(filepath.Join(dataDir, "postgres.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open the dev database log: %w", err)
	}
	cluster, err := pgcluster.Start(ctx, pgcluster.Options{DataDir: filepath.Join(dataDir, "postgres"), Log: logFile})
	if err != nil {
		if errors.Is(err, pgcluster.ErrNoBinaries) {
			return nil, err
		}
		return nil, fmt.Errorf("start the dev database in %s (its log: %s; --reset starts afresh): %w", dataDir, logFile.Name(), err)
	}
	conn, err := pgx.Connect(ctx, cluster.URL("postgres"))
	if err != nil {
		_ = cluster.Stop()
		return nil, fmt.Errorf("connect to the dev database: %w", err)
	}
	defer conn.Close(context.Background())
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", devDatabase).Scan(&exists); err != nil {
		_ = cluster.Stop()
		return nil, fmt.Errorf("look up the dev database: %w", err)
	}
	if !exists {
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+devDatabase); err != nil {
			_ = cluster.Stop()
			return nil, fmt.Errorf("create the dev database: %w", err)
		}
	}
	return cluster, nil
}

func printDevBanner(w io.Writer, cfg *config.Config, dataDir, imageRef string) {
	if imageRef == "" {
		imageRef = "<an image in RTM_ALLOWED_IMAGES>"
	}
	fmt.Fprintf(w, `rtmanager dev
  database     %s
  host id      %s
  state root   %s
  network      %s
  engine image %s
  data dir     %s   (rtmanager dev --reset starts afresh)

Start a game (plain SQL, as the Game Master does):
  psql '%s' -c "INSERT INTO jobs (host_id, game_id, kind, payload) VALUES ('%s', 'demo-1', 'start', '{\"image_ref\": \"%s\"}')"
Watch what happened:
  psql '%s' -c "SELECT game_id, status, current_container_id FROM runtime_records" -c "SELECT id, type, game_id FROM outbox ORDER BY xid, id"

`, db.Redact(cfg.DatabaseURL), cfg.HostID, cfg.StateRoot, cfg.DockerNetwork, imageRef, dataDir,
		db.Redact(cfg.DatabaseURL), cfg.HostID, imageRef, db.Redact(cfg.DatabaseURL))
}

// flagGiven reports whether args set the named flag explicitly.
func flagGiven(args []string, name string) bool {
	for _, a := range args {
		for _, prefix := range []string{"-" + name, "--" + name} {
			if a == prefix || len(a) > len(prefix) && a[:len(prefix)+1] == prefix+"=" {
				return true
			}
		}
	}
	return false
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
