package queuebench

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/galaxy/rtmanager/internal/testutil/pgtrace"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// meter reads the server's counters around a timed run: statements per
// database from pg_stat_statements (when the server loaded it), the WAL
// position, and CPU time: the server's (when it runs on this machine and
// its postmaster is known) and this process's.
type meter struct {
	pool *pgxpool.Pool // any database of the server with the extension
	pss  bool
	// postmaster is the server's, 0 when its CPU time is not read.
	postmaster int
}

// mark is where the counters stood when a timed run began.
type mark struct {
	lsn            string
	server, client time.Duration
}

// ownQueries are the meter's own statements, left out of the counts.
const ownQueries = `query NOT LIKE '%pg_stat_statements%' AND query NOT LIKE '%pg_current_wal_lsn%' AND query NOT LIKE '%/* queuebench */%'`

func newMeter(ctx context.Context, pool *pgxpool.Pool, postmaster int) *meter {
	m := &meter{pool: pool, postmaster: postmaster}
	// CREATE EXTENSION succeeds without the library preloaded; reading
	// the view does not.
	if _, err := pool.Exec(ctx, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"); err == nil {
		_, err = pool.Exec(ctx, "SELECT count(*) FROM pg_stat_statements")
		m.pss = err == nil
	}
	return m
}

// start resets the statement counts and marks the WAL position and the
// CPU times.
func (m *meter) start(ctx context.Context) (mark, error) {
	var at mark
	if m.pss {
		if _, err := m.pool.Exec(ctx, "SELECT pg_stat_statements_reset()"); err != nil {
			return at, fmt.Errorf("reset pg_stat_statements: %w", err)
		}
	}
	if err := m.pool.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&at.lsn); err != nil {
		return at, err
	}
	var err error
	if at.server, at.client, err = m.cpu(); err != nil {
		return at, err
	}
	return at, nil
}

// cpu reads the server's CPU time (-1 when not read) and this process's.
func (m *meter) cpu() (server, client time.Duration, err error) {
	server = -1
	if m.postmaster != 0 {
		if server, err = serverCPU(m.postmaster); err != nil {
			return 0, 0, err
		}
	}
	client, err = selfCPU()
	return server, client, err
}

// stop returns what database datname did since start (the WAL and the
// server's CPU time are the whole server's).
func (m *meter) stop(ctx context.Context, at mark, datname string) (Cost, error) {
	c := Cost{Statements: -1, ServerCPU: -1}
	server, client, err := m.cpu()
	if err != nil {
		return c, err
	}
	c.ClientCPU = client - at.client
	if server >= 0 && at.server >= 0 {
		c.ServerCPU = server - at.server
	}
	if err := m.pool.QueryRow(ctx, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::bigint", at.lsn).Scan(&c.WALBytes); err != nil {
		return c, fmt.Errorf("read the WAL position: %w", err)
	}
	if !m.pss {
		return c, nil
	}
	rows, err := m.pool.Query(ctx, `
SELECT regexp_replace(left(query, 400), '\s+', ' ', 'g'), calls, total_exec_time, plans, total_plan_time
FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = $1) AND `+ownQueries+`
ORDER BY calls DESC`, datname)
	if err != nil {
		return c, fmt.Errorf("read pg_stat_statements: %w", err)
	}
	all, err := pgx.CollectRows(rows, pgx.RowToStructByPos[StatementCalls])
	if err != nil {
		return c, fmt.Errorf("read pg_stat_statements: %w", err)
	}
	c.Statements = 0
	for _, s := range all {
		c.Statements += s.Calls
		c.ExecMS += s.ExecMS
	}
	c.Top = all[:min(len(all), 8)]
	return c, nil
}

var txControl = regexp.MustCompile(`(?i)^\s*(begin|commit|rollback|savepoint|release)\b`)

// explain runs EXPLAIN (ANALYZE, BUFFERS) of the captured statements on
// conn, each in a transaction that is rolled back, with the arguments
// equal to a key of subst replaced by its value (a probe call's host or
// queue by the real one).
func explain(ctx context.Context, conn *pgx.Conn, name string, stmts []pgtrace.Statement, subst map[string]string) (Explain, error) {
	ex := Explain{Statement: name}
	for i, s := range stmts {
		if txControl.MatchString(s.SQL) {
			continue
		}
		args := make([]any, len(s.Args))
		for j, a := range s.Args {
			args[j] = a
			if str, ok := a.(string); ok {
				if v, ok := subst[str]; ok {
					args[j] = v
				}
			}
		}
		custom, err := explainOnce(ctx, conn, "/* queuebench */ EXPLAIN (ANALYZE, BUFFERS) "+s.SQL, args, "")
		if err != nil {
			return ex, fmt.Errorf("explain %s: %w", name, err)
		}
		// The generic plan goes through PREPARE and EXECUTE: a statement
		// with bound parameters is always planned for their values.
		lits := make([]string, len(args))
		for j, a := range args {
			if lits[j], err = literal(a); err != nil {
				return ex, fmt.Errorf("explain %s: %w", name, err)
			}
		}
		stmt := fmt.Sprintf("qb_explain_%d", i)
		generic, err := explainOnce(ctx, conn,
			fmt.Sprintf("/* queuebench */ EXPLAIN (ANALYZE, BUFFERS) EXECUTE %s(%s)", stmt, strings.Join(lits, ", ")), nil,
			fmt.Sprintf("/* queuebench */ PREPARE %s AS %s", stmt, s.SQL))
		if err != nil {
			return ex, fmt.Errorf("explain %s (generic plan): %w", name, err)
		}
		ex.Custom += custom
		ex.Generic += generic
	}
	if ex.Custom == "" {
		return ex, errors.New("explain " + name + ": the call ran no statement")
	}
	return ex, nil
}

func explainOnce(ctx context.Context, conn *pgx.Conn, sql string, args []any, prepare string) (string, error) {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return "", err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if prepare != "" {
		if _, err := tx.Exec(ctx, prepare); err != nil {
			return "", err
		}
		if _, err := tx.Exec(ctx, "/* queuebench */ SET LOCAL plan_cache_mode = force_generic_plan"); err != nil {
			return "", err
		}
	}
	rows, err := tx.Query(ctx, sql, args...)
	if err != nil {
		return "", err
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return "", err
	}
	if prepare != "" {
		// Prepared statements outlive the transaction.
		name := strings.Fields(strings.TrimPrefix(prepare, "/* queuebench */"))[1]
		if _, err := tx.Exec(ctx, "/* queuebench */ DEALLOCATE "+name); err != nil {
			return "", err
		}
	}
	return strings.Join(lines, "\n") + "\n", nil
}

// literal renders a captured argument as an SQL literal for EXECUTE.
func literal(a any) (string, error) {
	switch v := a.(type) {
	case string:
		return "'" + strings.ReplaceAll(v, "'", "''") + "'", nil
	case int:
		return strconv.Itoa(v), nil
	case int32:
		return strconv.FormatInt(int64(v), 10), nil
	case int64:
		return strconv.FormatInt(v, 10), nil
	case nil:
		return "NULL", nil
	case time.Time:
		return "'" + v.Format(time.RFC3339Nano) + "'", nil
	case *time.Time:
		if v == nil {
			return "NULL", nil
		}
		return literal(*v)
	case []string:
		if v == nil {
			return "NULL", nil
		}
		q := make([]string, len(v))
		for i, s := range v {
			q[i] = `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, `'`, `''`).Replace(s) + `"`
		}
		return "'{" + strings.Join(q, ",") + "}'", nil
	}
	return "", fmt.Errorf("no literal for a %T argument", a)
}

var (
	execTimeRe = regexp.MustCompile(`Execution Time: ([0-9.]+) ms`)
	buffersRe  = regexp.MustCompile(`Buffers: (shared [^\n]*)`)
)

// keyLines sums up a plan: execution time and the top node's buffers.
func keyLines(plan string) string {
	if plan == "" {
		return "—"
	}
	out := "?"
	if m := execTimeRe.FindAllStringSubmatch(plan, -1); m != nil {
		var total float64
		for _, x := range m {
			f, _ := strconv.ParseFloat(x[1], 64)
			total += f
		}
		out = fmt.Sprintf("%.2f ms", total)
	}
	if m := buffersRe.FindStringSubmatch(plan); m != nil {
		out += ", " + m[1]
	}
	return out
}

// connectExplain opens the single connection the EXPLAINs run on: their
// prepared statements stay with it and go when it closes.
func connectExplain(ctx context.Context, pool *pgxpool.Pool) (*pgx.Conn, error) {
	return pgx.ConnectConfig(ctx, pool.Config().ConnConfig.Copy())
}
