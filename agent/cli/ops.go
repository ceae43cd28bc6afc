package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/galaxy/rtmanager/agent/config"
	"github.com/galaxy/rtmanager/rtmclient"
)

// ExitNotFound is the exit code of an operator command asked about a job,
// game, host or consumer that does not exist.
const ExitNotFound = 3

// operatorCommands are the commands operators and scripts use to look at
// and act on jobs, records, events and hosts. They print tables by
// default and JSON with -o json; their exit codes are ExitOK, ExitError
// (the command failed: unreachable database, refused job, ...), ExitUsage
// and ExitNotFound.
func operatorCommands() []command {
	return []command{
		{"jobs", "lifecycle jobs: enqueue | list | show ID | cancel ID | retry ID", cmdJobs},
		{"records", "runtime records: list | show GAME", cmdRecords},
		{"events", "the outbox: tail [--follow] [--consumer NAME]", cmdEvents},
		{"hosts", "agents' hosts with their liveness: list", cmdHosts},
	}
}

// opsCmd is one operator subcommand being run.
type opsCmd struct {
	e      *env
	name   string // "jobs list"
	cfg    config.Config
	output string
	args   []string
}

// parseOps parses the flags of an operator subcommand: the database
// settings, -o, and what extra registers. Unlike the agent's commands,
// flags may follow the positional arguments (`jobs show 12 -o json`).
func parseOps(e *env, name, synopsis string, args []string, extra func(*flag.FlagSet)) (*opsCmd, int, bool) {
	c := &opsCmd{e: e, name: name}
	fs := flag.NewFlagSet("rtmanager "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.StringVar(&c.output, "o", "table", "output: table (for people) or json (for scripts)")
	if extra != nil {
		extra(fs)
	}
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "Usage: rtmanager %s %s\n\nFlags:\n", name, synopsis)
		fs.PrintDefaults()
		fmt.Fprintf(e.stderr, "\nExit codes: %d ok, %d failed, %d wrong usage, %d not found.\n", ExitOK, ExitError, ExitUsage, ExitNotFound)
	}
	check := c.cfg.Set(fs, config.Database)
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, ExitOK, false
			}
			return nil, ExitUsage, false
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			c.args = append(c.args, rest...)
			break
		}
		c.args = append(c.args, rest[0])
		args = rest[1:]
	}
	if err := check(); err != nil {
		return nil, usageError(e, name, err), false
	}
	if c.output != "table" && c.output != "json" {
		return nil, usageError(e, name, fmt.Errorf("-o must be table or json, got %q", c.output)), false
	}
	return c, 0, true
}

func (c *opsCmd) json() bool { return c.output == "json" }

// connect opens a client; on failure it reports and returns the exit code.
func (c *opsCmd) connect(ctx context.Context) (*rtmclient.Client, int) {
	client, err := rtmclient.Connect(ctx, c.cfg.DatabaseURL)
	if err != nil {
		return nil, c.fail(err)
	}
	return client, ExitOK
}

// fail reports err and returns its exit code: ExitNotFound for unknown
// ids, ExitError otherwise.
func (c *opsCmd) fail(err error) int {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P01" {
		err = fmt.Errorf("%w; the database has no rtmanager schema: run `rtmanager migrate up` or point RTM_DATABASE_URL at the rtmanager database", err)
	}
	fail(c.e, c.name, err)
	if errors.Is(err, rtmclient.ErrNotFound) {
		return ExitNotFound
	}
	return ExitError
}

// oneArg returns the single positional argument.
func (c *opsCmd) oneArg(what string) (string, int, bool) {
	if len(c.args) != 1 {
		return "", usageError(c.e, c.name, fmt.Errorf("give exactly one %s, got %d arguments", what, len(c.args))), false
	}
	return c.args[0], 0, true
}

// jobID parses the single positional argument as a job id.
func (c *opsCmd) jobID() (int64, int, bool) {
	s, code, ok := c.oneArg("job id")
	if !ok {
		return 0, code, false
	}
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, usageError(c.e, c.name, fmt.Errorf("job id must be a positive number, got %q", s)), false
	}
	return id, 0, true
}

func (c *opsCmd) noArgs() (int, bool) {
	if len(c.args) != 0 {
		return usageError(c.e, c.name, fmt.Errorf("unexpected arguments %q", c.args)), false
	}
	return 0, true
}

// writeJSON prints v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// table writes aligned columns.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
	t.row(header...)
	return t
}

func (t *table) row(cells ...string) { fmt.Fprintln(t.tw, strings.Join(cells, "\t")) }
func (t *table) flush()              { _ = t.tw.Flush() }

// fields writes "key: value" lines, aligned.
func fields(w io.Writer, kv ...string) {
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", kv[i], kv[i+1])
		}
	}
	_ = tw.Flush()
}

// stamp formats a time for tables: UTC, to the second, fixed width.
func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02T15:04:05Z")
}

func stampPtr(t *time.Time) string {
	if t == nil {
		return ""
	}
	return stamp(*t)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// clip shortens s to n characters for a table cell.
func clip(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

// unknownAction reports a missing or unknown action of cmd.
func unknownAction(e *env, cmd string, args []string, actions string) int {
	if len(args) == 0 {
		fmt.Fprintf(e.stderr, "rtmanager %s: say what to do: %s\n", cmd, actions)
	} else {
		fmt.Fprintf(e.stderr, "rtmanager %s: unknown action %q: use %s\n", cmd, args[0], actions)
	}
	return ExitUsage
}
