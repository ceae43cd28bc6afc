// Package cli is the rtmanager command line: one function per subcommand,
// each returning the process exit code so that tests run them in-process.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/galaxy/rtmanager/agent/config"
	"github.com/galaxy/rtmanager/internal/db"
)

// Version is set at build time with -ldflags "-X .../agent/cli.Version=...".
var Version = "dev"

// Exit codes scripts can rely on.
const (
	ExitOK    = 0
	ExitError = 1 // the command ran and failed
	ExitUsage = 2 // the command line or the configuration is wrong
)

type command struct {
	name, summary string
	run           func(ctx context.Context, env *env, args []string) int
}

type env struct {
	stdout, stderr io.Writer
}

func commands() []command {
	return append([]command{
		{"run", "run the agent for this Docker host", cmdRun},
		{"dev", "run the agent on a throwaway local PostgreSQL and the local Docker daemon", cmdDev},
		{"console", "serve the operator console: fleet, games, jobs and events in a web page", cmdConsole},
		{"migrate", "manage the database schema: up | down [N] | version | force VERSION", cmdMigrate},
		{"version", "print the version", cmdVersion},
	}, operatorCommands()...)
}

// hiddenCommands run like the others but are left out of the usage.
func hiddenCommands() []command {
	return []command{
		{"demo", "start `rtmanager dev` and play the Game Master against it (make demo)", cmdDemo},
	}
}

// Main runs the command line args (without the program name) and returns
// the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return run(ctx, args, &env{stdout: stdout, stderr: stderr})
}

func run(ctx context.Context, args []string, e *env) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(e.stdout)
		if len(args) == 0 {
			return ExitUsage
		}
		return ExitOK
	}
	for _, c := range append(commands(), hiddenCommands()...) {
		if c.name == args[0] {
			return c.run(ctx, e, args[1:])
		}
	}
	fmt.Fprintf(e.stderr, "rtmanager: unknown command %q; run `rtmanager --help` for the list\n", args[0])
	return ExitUsage
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "rtmanager — the Runtime Manager agent of a Docker host")
	fmt.Fprintln(w, "\nUsage: rtmanager <command> [flags]\n\nCommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nEvery flag can also be set with an RTM_* environment variable; `rtmanager <command> --help` lists them.")
}

// parse parses a subcommand's flags with the given settings. It returns
// false with the exit code when the command must stop.
func parse(e *env, name, synopsis string, args []string, cfg *config.Config, what ...config.Setting) (rest []string, code int, ok bool) {
	return parseWith(e, name, synopsis, args, cfg, nil, what...)
}

// parseWith is parse with extra flags registered by extra.
func parseWith(e *env, name, synopsis string, args []string, cfg *config.Config, extra func(*flag.FlagSet), what ...config.Setting) (rest []string, code int, ok bool) {
	fs := flag.NewFlagSet("rtmanager "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	if extra != nil {
		extra(fs)
	}
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "Usage: rtmanager %s %s\n\nFlags:\n", name, synopsis)
		fs.PrintDefaults()
	}
	check := cfg.Set(fs, what...)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, ExitOK, false
		}
		return nil, ExitUsage, false
	}
	if err := check(); err != nil {
		fmt.Fprintf(e.stderr, "rtmanager %s: %v\n", name, err)
		return nil, ExitUsage, false
	}
	return fs.Args(), 0, true
}

func newLogger(w io.Writer, cfg *config.Config) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func usageError(e *env, cmd string, err error) int {
	fail(e, cmd, err)
	return ExitUsage
}

// fail reports err in one line, so that a script or a journal shows the
// whole message.
func fail(e *env, cmd string, err error) int {
	msg := strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", " ")), " ")
	fmt.Fprintf(e.stderr, "rtmanager %s: %s\n", cmd, msg)
	return ExitError
}

func cmdVersion(_ context.Context, e *env, _ []string) int {
	fmt.Fprintf(e.stdout, "rtmanager %s (schema version %d)\n", Version, db.SchemaVersion)
	return ExitOK
}

func cmdMigrate(ctx context.Context, e *env, args []string) int {
	var cfg config.Config
	rest, code, ok := parse(e, "migrate", "up | down [N] | version | force VERSION", args, &cfg, config.Database, config.Logging)
	if !ok {
		return code
	}
	opts := db.MigrateOptions{LockTimeout: cfg.MigrateLockTimeout, Logger: newLogger(e.stderr, &cfg)}
	if len(rest) == 0 {
		fmt.Fprintln(e.stderr, "rtmanager migrate: say what to do: up, down [N], version or force VERSION")
		return ExitUsage
	}
	switch rest[0] {
	case "up":
		if err := db.MigrateUp(ctx, cfg.MigrateURL(), opts); err != nil {
			return fail(e, "migrate up", err)
		}
		fmt.Fprintf(e.stdout, "schema at version %d\n", db.SchemaVersion)
	case "down":
		steps := 1
		if len(rest) > 1 {
			n, err := strconv.Atoi(rest[1])
			if err != nil || n < 1 {
				fmt.Fprintf(e.stderr, "rtmanager migrate down: N must be a positive number of migrations, got %q\n", rest[1])
				return ExitUsage
			}
			steps = n
		}
		if err := db.MigrateDown(ctx, cfg.MigrateURL(), steps, opts); err != nil {
			return fail(e, "migrate down", err)
		}
		v, _, _ := db.MigrationVersion(ctx, cfg.MigrateURL())
		fmt.Fprintf(e.stdout, "schema at version %d\n", v)
	case "version":
		v, dirty, err := db.MigrationVersion(ctx, cfg.MigrateURL())
		if err != nil {
			return fail(e, "migrate version", err)
		}
		state := "clean"
		if dirty {
			state = "dirty"
		}
		fmt.Fprintf(e.stdout, "schema version %d (%s); this build expects %d\n", v, state, db.SchemaVersion)
	case "force":
		if len(rest) < 2 {
			fmt.Fprintln(e.stderr, "rtmanager migrate force: give the version to record, e.g. `rtmanager migrate force 1`")
			return ExitUsage
		}
		v, err := strconv.Atoi(rest[1])
		if err != nil || v < -1 {
			fmt.Fprintf(e.stderr, "rtmanager migrate force: VERSION must be a number, got %q\n", rest[1])
			return ExitUsage
		}
		if err := db.MigrateForce(ctx, cfg.MigrateURL(), v, opts); err != nil {
			return fail(e, "migrate force", err)
		}
		fmt.Fprintf(e.stdout, "schema recorded at version %d\n", v)
	default:
		fmt.Fprintf(e.stderr, "rtmanager migrate: unknown action %q: use up, down [N], version or force VERSION\n", rest[0])
		return ExitUsage
	}
	return ExitOK
}
