package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/galaxy/rtmanager/agent/config"
	"github.com/galaxy/rtmanager/agent/console"
	"github.com/galaxy/rtmanager/internal/db"
)

func cmdConsole(ctx context.Context, e *env, args []string) int {
	var cfg config.Config
	if _, code, ok := parse(e, "console", "[flags]", args, &cfg, config.Database, config.Console, config.Logging); !ok {
		return code
	}
	log := newLogger(e.stderr, &cfg)
	c, err := startConsole(ctx, &cfg, log)
	if err != nil {
		return fail(e, "console", err)
	}
	fmt.Fprintf(e.stdout, "rtmanager console on %s (%s)\n", c.url, consoleMode(&cfg.Console))
	if err := c.wait(); err != nil {
		return fail(e, "console", err)
	}
	return ExitOK
}

// runningConsole is a console serving in the background.
type runningConsole struct {
	url  string
	done chan error
	pool *pgxpool.Pool
}

// wait returns when the console has stopped (its context ended).
func (c *runningConsole) wait() error {
	err := <-c.done
	c.pool.Close()
	return err
}

// startConsole opens the console's pool and listener and serves until ctx
// ends. It reads the shared database only: no Docker, no migration.
func startConsole(ctx context.Context, cfg *config.Config, log *slog.Logger) (*runningConsole, error) {
	pool, err := db.Connect(ctx, cfg.DatabaseURL, func(pc *pgxpool.Config) {
		pc.MaxConns = 8
		console.ConfigurePool(pc)
	})
	if err != nil {
		return nil, err
	}
	if err := db.NewStore(pool, nil).CheckSchema(ctx); err != nil {
		// An agent of another version migrates; the console's pages
		// read columns every version has, so it shows what it can.
		log.Warn("console: the schema is not the one this build expects; pages may fail", "err", err)
	}
	srv, err := console.New(console.Options{
		Pool: pool, Logger: log.With("component", "console"),
		Actions: cfg.Console.Actions, Token: cfg.Console.Token, TrustedHeader: cfg.Console.TrustedHeader,
		TraceURL: cfg.Console.TraceURL, DownAfter: cfg.Console.DownAfter,
		Listen: !cfg.TransactionPooler(), PollInterval: cfg.Console.PollInterval, Version: Version,
	})
	if err != nil {
		pool.Close()
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Console.Addr)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("listen on --console-addr (RTM_CONSOLE_ADDR) %s: %w", cfg.Console.Addr, err)
	}
	c := &runningConsole{url: "http://" + ln.Addr().String(), done: make(chan error, 1), pool: pool}
	go func() { c.done <- srv.Serve(ctx, ln) }()
	log.Info("console started", "url", c.url, "actions", cfg.Console.Actions, "listen", !cfg.TransactionPooler())
	return c, nil
}

// consoleMode says in a few words who may act.
func consoleMode(cc *config.ConsoleConfig) string {
	if !cc.Actions {
		return "read-only"
	}
	switch {
	case cc.Token != "" && cc.TrustedHeader != "":
		return "actions on: token or " + cc.TrustedHeader
	case cc.Token != "":
		return "actions on: token"
	default:
		return "actions on: " + cc.TrustedHeader
	}
}

// newConsoleToken makes a token for `rtmanager dev`'s console.
func newConsoleToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
