package queuebench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/galaxy/rtmanager/agent/telemetry"
	"github.com/galaxy/rtmanager/internal/db"
)

type harness struct {
	opts  Options
	meter *meter
	river *riverSide
	ours  *ours
}

func (h *harness) progress(format string, args ...any) {
	fmt.Fprintf(h.opts.Progress, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// Run measures both queues on the server of opts.AdminURL.
func Run(ctx context.Context, opts Options) (*Report, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	began := time.Now()
	rep := &Report{Options: opts, Connection: connectionKind(opts.AdminURL)}
	// Our worker's tracer and meters as `rtmanager run` sets them up with
	// no exporter configured (River's side does not use them).
	tel, err := telemetry.Setup(ctx, telemetry.Config{ServiceVersion: "queuebench", HostID: benchHost})
	if err != nil {
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	defer func() { _ = tel.Shutdown(context.WithoutCancel(ctx)) }()
	admin, err := pgx.Connect(ctx, opts.AdminURL)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", db.Redact(opts.AdminURL), err)
	}
	defer admin.Close(context.WithoutCancel(ctx))
	if err := admin.QueryRow(ctx, "SELECT version()").Scan(&rep.Server); err != nil {
		return nil, err
	}
	if err := admin.QueryRow(ctx, `/* queuebench */ SELECT string_agg(name || '=' || setting, ', ' ORDER BY name) FROM pg_settings
WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes', 'shared_buffers', 'max_connections', 'shared_preload_libraries', 'autovacuum')`).Scan(&rep.Settings); err != nil {
		return nil, err
	}

	suffix := randomSuffix()
	names := map[string]string{"ours": "queuebench_" + suffix + "_ours", "river": "queuebench_" + suffix + "_river"}
	for _, name := range names {
		if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
			return nil, fmt.Errorf("create database %s: %w", name, err)
		}
		defer func() {
			if _, err := admin.Exec(context.WithoutCancel(ctx), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
				fmt.Fprintf(opts.Progress, "drop database %s: %v\n", name, err)
			}
		}()
	}
	oursURL, riverURL := withDatabase(opts.AdminURL, names["ours"]), withDatabase(opts.AdminURL, names["river"])
	if err := db.MigrateUp(ctx, oursURL, db.MigrateOptions{}); err != nil {
		return nil, fmt.Errorf("migrate our database: %w", err)
	}
	if opts.OursSQL != "" {
		if err := execVariant(ctx, oursURL, opts.OursSQL); err != nil {
			return nil, fmt.Errorf("run %s on our database: %w", opts.OursSQLName, err)
		}
	}
	oursPool, err := pgxpool.New(ctx, oursURL)
	if err != nil {
		return nil, err
	}
	defer oursPool.Close()
	riverPool, err := pgxpool.New(ctx, riverURL)
	if err != nil {
		return nil, err
	}
	defer riverPool.Close()
	if err := migrateRiver(ctx, riverPool); err != nil {
		return nil, fmt.Errorf("migrate River's database: %w", err)
	}

	log := slog.New(slog.DiscardHandler)
	if opts.Logger != nil {
		log = opts.Logger
	}
	h := &harness{
		opts:  opts,
		meter: newMeter(ctx, oursPool, opts.ServerPID),
		ours:  &ours{url: oursURL, db: names["ours"], pool: oursPool, concurrency: opts.Concurrency, prefetch: opts.Prefetch, poolSize: opts.PoolSize, log: log},
		river: &riverSide{url: riverURL, db: names["river"], pool: riverPool, poolSize: opts.PoolSize, log: log, cfg: river.Config{
			FetchCooldown:     opts.RiverFetchCooldown,
			FetchPollInterval: opts.RiverFetchPollInterval,
			Queues:            map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: opts.RiverMaxWorkers}},
		}},
	}
	rep.PSS = h.meter.pss
	if err := h.run(ctx, rep); err != nil {
		return rep, err
	}
	rep.Elapsed = time.Since(began)
	return rep, nil
}

func (h *harness) run(ctx context.Context, rep *Report) error {
	opts := h.opts
	rep.Sizes = make([]SizeRow, len(opts.Sizes))
	for i, n := range opts.Sizes {
		rep.Sizes[i].Jobs = n
	}
	for round := range opts.Rounds {
		for i, n := range opts.Sizes {
			for _, s := range []side{h.river, h.ours} {
				h.progress("round %d/%d: %s works down %d jobs", round+1, opts.Rounds, s.name(), n)
				row := &rep.Sizes[i]
				var mid *Explain
				if round == 0 {
					mid = &row.ClaimMid
					if s == side(h.river) {
						mid = &row.RiverFetchMid
					}
				}
				m, ex, err := h.backlogRound(ctx, s, n, round == 0, nil, mid)
				if err != nil {
					return err
				}
				h.progress("  %.0f jobs/s", m.PerSec())
				if s == side(h.river) {
					row.River = append(row.River, m)
					if round == 0 {
						row.RiverFetch = ex
					}
				} else {
					row.Ours = append(row.Ours, m)
					if round == 0 {
						row.Claim = ex
					}
				}
			}
		}
		h.progress("round %d/%d: raw baselines", round+1, opts.Rounds)
		raw, err := h.rawBaselines(ctx)
		if err != nil {
			return fmt.Errorf("raw baselines: %w", err)
		}
		rep.Raw = append(rep.Raw, raw)
	}
	if opts.Alongside > 0 {
		for round := range opts.Rounds {
			for _, s := range []side{h.river, h.ours} {
				h.progress("round %d/%d: %s works for %s with inserts alongside", round+1, opts.Rounds, s.name(), opts.Alongside)
				m, err := h.alongsideRound(ctx, s)
				if err != nil {
					return err
				}
				h.progress("  %.0f jobs/s", m.PerSec())
				if s == side(h.river) {
					rep.Alongside.River = append(rep.Alongside.River, m)
				} else {
					rep.Alongside.Ours = append(rep.Alongside.Ours, m)
				}
			}
		}
	}
	if opts.Growth {
		if err := h.growth(ctx, rep); err != nil {
			return err
		}
	}
	return nil
}

// backlogRound works down a backlog of n jobs on an emptied table. fill
// (nil: n jobs of games of their own, as the side's producer inserts
// them) puts the backlog, and anything else the table should hold, in.
// With withExplain the claim is explained on the full backlog first (its
// rolled-back claim leaves dead row versions, which a VACUUM removes
// before the timed run); with mid also half-way (see workDown).
func (h *harness) backlogRound(ctx context.Context, s side, n int, withExplain bool, fill func(context.Context, *runner) error, mid *Explain) (Measure, Explain, error) {
	var ex Explain
	if err := s.reset(ctx); err != nil {
		return Measure{}, ex, err
	}
	r, err := s.prepare(ctx)
	if err != nil {
		return Measure{}, ex, err
	}
	stop := sync.OnceValue(r.stop)
	defer func() { _ = stop() }()
	if fill == nil {
		fill = func(ctx context.Context, r *runner) error { return r.insert(ctx, n) }
	}
	if err := fill(ctx, r); err != nil {
		return Measure{}, ex, err
	}
	if err := s.settle(ctx); err != nil {
		return Measure{}, ex, err
	}
	if withExplain {
		if ex, err = r.explain(ctx); err != nil {
			return Measure{}, ex, err
		}
		if err := s.settle(ctx); err != nil {
			return Measure{}, ex, err
		}
	}
	m, err := h.workDown(ctx, s, r, n, mid)
	if err != nil {
		return m, ex, err
	}
	if err := stop(); err != nil {
		return m, ex, fmt.Errorf("%s: stop: %w", s.name(), err)
	}
	return m, ex, s.verify(ctx, n)
}

func (h *harness) alongsideRound(ctx context.Context, s side) (Measure, error) {
	if err := s.reset(ctx); err != nil {
		return Measure{}, err
	}
	r, err := s.prepare(ctx)
	if err != nil {
		return Measure{}, err
	}
	stop := sync.OnceValue(r.stop)
	defer func() { _ = stop() }()
	m, err := h.alongside(ctx, s, r, h.opts.Alongside, h.opts.AlongsideMin)
	if err != nil {
		return m, err
	}
	if err := stop(); err != nil {
		return m, fmt.Errorf("%s: stop: %w", s.name(), err)
	}
	return m, nil
}

func connectionKind(adminURL string) string {
	cfg, err := pgx.ParseConfig(adminURL)
	if err != nil {
		return "?"
	}
	if len(cfg.Host) > 0 && cfg.Host[0] == '/' {
		return "Unix socket"
	}
	return fmt.Sprintf("TCP to %s:%d", cfg.Host, cfg.Port)
}

// withDatabase returns baseURL with its database name replaced.
func withDatabase(baseURL, name string) string {
	u, err := url.Parse(baseURL)
	if err != nil {
		return baseURL
	}
	u.Path = "/" + name
	return u.String()
}

func randomSuffix() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// execVariant runs a schema variant's SQL (several statements) on the
// database at url, in one implicit transaction of the simple protocol.
func execVariant(ctx context.Context, url, sql string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.PgConn().Exec(ctx, sql).ReadAll()
	return err
}
