package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
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
	var dataDir, databaseURL string
	var reset bool
	extra := func(fs *flag.FlagSet) {
		fs.StringVar(&dataDir, "data-dir", envOr("RTM_DEV_DIR", defaultDevDir()),
			"where the dev database and game state live between runs (env RTM_DEV_DIR)")
		fs.BoolVar(&reset, "reset", false, "delete the dev database and state first, and start afresh")
		fs.StringVar(&databaseURL, "database-url", "",
			"use this PostgreSQL database instead of a local one (env RTM_DATABASE_URL, or RTM_DATABASE_URL_FILE naming a file that holds it)")
	}
	if _, code, ok := parseWith(e, "dev", "[flags]", args, &cfg, extra, config.Agent, config.Console, config.Logging); !ok {
		return code
	}
	// The dev console acts by default, with a token of its own (printed
	// in the banner) unless one is configured.
	if os.Getenv("RTM_CONSOLE_ACTIONS") == "" && !flagGiven(args, "console-actions") {
		cfg.Console.Actions = true
	}
	if cfg.Console.Actions && cfg.Console.Token == "" && cfg.Console.TrustedHeader == "" {
		cfg.Console.Token = newConsoleToken()
	}
	if databaseURL == "" {
		url, err := devDatabaseURL()
		if err != nil {
			return usageError(e, "dev", err)
		}
		databaseURL = url
	}
	cfg.DatabaseURL = databaseURL
	cfg.AutoMigrate = true
	cfg.MigrateLockTimeout = db.DefaultMigrateLockTimeout
	if os.Getenv("RTM_STATE_ROOT") == "" && !flagGiven(args, "state-root") {
		cfg.StateRoot = filepath.Join(dataDir, "state")
	}
	if os.Getenv("RTM_DOCKER_NETWORK") == "" && !flagGiven(args, "docker-network") {
		cfg.DockerNetwork = "galaxy-dev"
	}
	httpAddr, err := resolveHTTPAddr(cfg.HTTPAddr)
	if err != nil {
		return usageError(e, "dev", err)
	}
	cfg.HTTPAddr = httpAddr
	log := newLogger(e.stderr, &cfg)

	if reset {
		if err := os.RemoveAll(dataDir); err != nil {
			return fail(e, "dev", fmt.Errorf("reset %s: %w", dataDir, err))
		}
	}
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return fail(e, "dev", fmt.Errorf("create %s: %w (choose another place with --data-dir)", dataDir, err))
	}
	// The state root must exist: game state directories resolve inside it.
	if err := os.MkdirAll(cfg.StateRoot, 0o755); err != nil {
		return fail(e, "dev", fmt.Errorf("create the state root %s: %w (choose another place with --state-root)", cfg.StateRoot, err))
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
	// Migrate before the console reads the schema (the agent's own
	// migration then has nothing to do).
	if err := db.MigrateUp(ctx, cfg.MigrateURL(), db.MigrateOptions{LockTimeout: cfg.MigrateLockTimeout, Logger: log}); err != nil {
		return fail(e, "dev", err)
	}
	consoleLine := ""
	agentCtx, stopAgent := context.WithCancel(ctx)
	defer stopAgent()
	con, err := startConsole(agentCtx, &cfg, log)
	if err != nil {
		// The console is an extra here: the agent runs without it.
		log.Warn("the console did not start", "err", err)
		consoleLine = "not started: " + err.Error()
	} else {
		consoleLine = con.url + "   (" + consoleMode(&cfg.Console) + ")"
		if cfg.Console.Actions && cfg.Console.Token != "" {
			consoleLine += "\n  token        " + cfg.Console.Token + "   (the console's: log in with it to cancel or retry jobs)"
		}
	}
	printDevBanner(e.stdout, &cfg, dataDir, imageRef, consoleLine)
	err = app.Run(agentCtx, &cfg, log, Version)
	stopAgent()
	if con != nil {
		if cerr := con.wait(); cerr != nil {
			log.Warn("the console stopped with an error", "err", cerr)
		}
	}
	if err != nil {
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

func printDevBanner(w io.Writer, cfg *config.Config, dataDir, imageRef, consoleLine string) {
	if imageRef == "" {
		imageRef = "<an image in RTM_ALLOWED_IMAGES>"
	}
	httpLine := "disabled (--http-addr)"
	if cfg.HTTPAddr != "" {
		httpLine = "http://" + cfg.HTTPAddr + "   (/healthz, /readyz, /metrics)"
	}
	url := db.Redact(cfg.DatabaseURL)
	fmt.Fprintf(w, `rtmanager dev
  database     %s
  http         %s
  console      %s
  host id      %s
  state root   %s
  network      %s
  engine image %s
  data dir     %s   (rtmanager dev --reset starts afresh)

Start a game, from another terminal:
  export RTM_DATABASE_URL='%s'
  rtmanager jobs enqueue --host %s --game demo-1 --kind start --payload '{"image_ref": "%s"}'
or with plain SQL, as the Game Master does:
  psql "$RTM_DATABASE_URL" -c "INSERT INTO jobs (host_id, game_id, kind, payload) VALUES ('%s', 'demo-1', 'start', '{\"image_ref\": \"%s\"}')"
Watch what happened: open the console, or
  rtmanager records list; rtmanager events tail --follow

`, url, httpLine, consoleLine, cfg.HostID, cfg.StateRoot, cfg.DockerNetwork, imageRef, dataDir,
		url, cfg.HostID, imageRef, cfg.HostID, imageRef)
}

// devDatabaseURL is the database `rtmanager dev` uses instead of its own:
// RTM_DATABASE_URL, or the file RTM_DATABASE_URL_FILE names; "" for none.
func devDatabaseURL() (string, error) {
	if url := os.Getenv("RTM_DATABASE_URL"); url != "" {
		return url, nil
	}
	file := os.Getenv("RTM_DATABASE_URL_FILE")
	if file == "" {
		return "", nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("RTM_DATABASE_URL_FILE: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// resolveHTTPAddr turns port 0 into a free port, so that the banner can
// say where the health endpoints are.
func resolveHTTPAddr(addr string) (string, error) {
	if addr == "" {
		return "", nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("--http-addr %q: %w", addr, err)
	}
	if port != "0" {
		return addr, nil
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", fmt.Errorf("--http-addr %q: %w", addr, err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
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
