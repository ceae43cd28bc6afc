// Package loadsim simulates a fleet of agents on one PostgreSQL: many
// simulated agents in one process, each with its own host id, host lease
// (agent/leader) and job worker (Docker replaced by worker.Noop), and a
// Game Master simulator that inserts jobs across all hosts.
//
// It measures what the fleet costs the database while idle (statements per
// second, from pg_stat_statements when the server loaded it, and
// transactions per second from pg_stat_database) and, under load, the
// pickup latency (claim time minus due time, both on the database's clock)
// and the throughput.
//
// One LISTEN connection is shared by all simulated agents of the process
// (the notification payload is the host id; agents are woken with
// worker.Worker.Wake), as one real agent per host holds one each: a
// thousand real agents need a thousand connections, which is the
// server's max_connections to plan for, not a statement cost.
package loadsim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/galaxy/rtmanager/agent/leader"
	"github.com/galaxy/rtmanager/agent/worker"
	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/domain/job"
)

// Options configure one run.
type Options struct {
	// DatabaseURL is a migrated database the run may fill.
	DatabaseURL string
	Hosts       int
	// Idle is how long the idle cost is measured, after every agent
	// became active and Settle passed.
	Idle, Settle time.Duration
	// Jobs are inserted at Rate per second, spread over the hosts at
	// random, one game per job.
	Jobs int
	Rate float64
	// HostLeaseTTL, ListenPollInterval, LeaseDuration as the agent's
	// settings (RTM_HOST_LEASE_TTL, RTM_LISTEN_POLL_INTERVAL,
	// RTM_LEASE_DURATION).
	HostLeaseTTL, ListenPollInterval, LeaseDuration time.Duration
	// PoolSize bounds the connections of all simulated agents together.
	PoolSize int
	Logger   *slog.Logger
}

func (o *Options) defaults() {
	if o.Hosts <= 0 {
		o.Hosts = 1
	}
	if o.Idle <= 0 {
		o.Idle = 10 * time.Second
	}
	if o.Settle <= 0 {
		o.Settle = 2 * time.Second
	}
	if o.Rate <= 0 {
		o.Rate = 200
	}
	if o.HostLeaseTTL <= 0 {
		o.HostLeaseTTL = leader.DefaultTTL
	}
	if o.ListenPollInterval <= 0 {
		o.ListenPollInterval = time.Minute
	}
	if o.LeaseDuration <= 0 {
		o.LeaseDuration = 30 * time.Second
	}
	if o.PoolSize <= 0 {
		o.PoolSize = 40
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Report is what a run measured.
type Report struct {
	Hosts int
	// IdleStatementsPerSec is from pg_stat_statements (all statements of
	// the database but the measurement's own); -1 when not loaded.
	IdleStatementsPerSec float64
	// IdleXactsPerSec is xact_commit+xact_rollback of the database from
	// pg_stat_database.
	IdleXactsPerSec float64
	Jobs            int
	PickupP50       time.Duration
	PickupP99       time.Duration
	// Throughput is jobs finished per second, first insert to last finish.
	Throughput float64
}

func (r Report) String() string {
	stmts := "n/a"
	if r.IdleStatementsPerSec >= 0 {
		stmts = fmt.Sprintf("%.1f", r.IdleStatementsPerSec)
	}
	return fmt.Sprintf("hosts=%d idle_statements/s=%s idle_xacts/s=%.1f jobs=%d pickup_p50=%s pickup_p99=%s throughput=%.0f jobs/s",
		r.Hosts, stmts, r.IdleXactsPerSec, r.Jobs, r.PickupP50.Round(100*time.Microsecond), r.PickupP99.Round(100*time.Microsecond), r.Throughput)
}

// Run runs the simulation once.
func Run(ctx context.Context, o Options) (Report, error) {
	o.defaults()
	rep := Report{Hosts: o.Hosts, Jobs: o.Jobs, IdleStatementsPerSec: -1}
	pool, err := db.Connect(ctx, o.DatabaseURL, func(pc *pgxpool.Config) { pc.MaxConns = int32(o.PoolSize) })
	if err != nil {
		return rep, err
	}
	defer pool.Close()
	store := db.NewStore(pool, nil)
	policy := job.DefaultPolicy()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu      sync.Mutex
		workers = map[string]*worker.Worker{}
		leases  = make([]*leader.Lease, o.Hosts)
		wg      sync.WaitGroup
	)
	hostID := func(i int) string { return fmt.Sprintf("sim-%05d", i) }
	for i := range o.Hosts {
		h := hostID(i)
		owner := h + "/sim"
		leases[i] = leader.New(store, leader.Config{HostID: h, AgentID: owner, Version: "loadsim", TTL: o.HostLeaseTTL, Logger: o.Logger})
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = leases[i].Run(ctx, func(tctx context.Context) error {
				w := worker.New(store, worker.Noop, worker.Config{
					HostID: h, Owner: owner, Concurrency: 4, LeaseDuration: o.LeaseDuration,
					PollInterval: o.ListenPollInterval, Policy: policy, Logger: o.Logger,
					// As the agent (agent/app) sets it.
					RescueInterval: max(2*time.Minute, o.LeaseDuration),
				})
				mu.Lock()
				workers[h] = w
				mu.Unlock()
				defer func() { mu.Lock(); delete(workers, h); mu.Unlock() }()
				return w.Run(tctx)
			})
		}()
	}
	defer func() { cancel(); wg.Wait() }()
	// The shared LISTEN connection.
	listening := make(chan error, 1)
	go func() {
		listening <- listen(ctx, pool, func(h string) {
			mu.Lock()
			w := workers[h]
			mu.Unlock()
			if w != nil {
				w.Wake()
			}
		})
	}()

	deadline := time.Now().Add(time.Minute + time.Duration(o.Hosts)*20*time.Millisecond)
	for {
		active := 0
		for _, l := range leases {
			if l.Active() {
				active++
			}
		}
		if active == o.Hosts {
			break
		}
		if time.Now().After(deadline) {
			return rep, fmt.Errorf("only %d of %d simulated agents became active", active, o.Hosts)
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return rep, err
		}
	}
	if err := sleep(ctx, o.Settle); err != nil {
		return rep, err
	}

	// Idle cost.
	var hasPSS bool
	_ = pool.QueryRow(ctx, `SELECT count(*) > 0 FROM pg_extension WHERE extname = 'pg_stat_statements'`).Scan(&hasPSS)
	s0, x0, err := counters(ctx, pool, hasPSS)
	if err != nil {
		return rep, err
	}
	began := time.Now()
	if err := sleep(ctx, o.Idle); err != nil {
		return rep, err
	}
	s1, x1, err := counters(ctx, pool, hasPSS)
	if err != nil {
		return rep, err
	}
	secs := time.Since(began).Seconds()
	// Backends report their transaction counts about once a second, so
	// a short window is approximate (the measurement's own few reads are
	// included).
	rep.IdleXactsPerSec = max(0, float64(x1-x0)/secs)
	if hasPSS {
		rep.IdleStatementsPerSec = float64(s1-s0) / secs
	}

	if o.Jobs > 0 {
		if err := gameMaster(ctx, pool, o, hostID); err != nil {
			return rep, err
		}
		wdl := time.Now().Add(2*time.Minute + time.Duration(float64(o.Jobs)/o.Rate*float64(time.Second)))
		for {
			var left int
			if err := pool.QueryRow(ctx, `SELECT count(*) FROM jobs WHERE finished_at IS NULL`).Scan(&left); err != nil {
				return rep, err
			}
			if left == 0 {
				break
			}
			if time.Now().After(wdl) {
				return rep, fmt.Errorf("%d jobs still unfinished", left)
			}
			if err := sleep(ctx, 100*time.Millisecond); err != nil {
				return rep, err
			}
		}
		var p50, p99, span float64
		var n int
		err := pool.QueryRow(ctx, `
SELECT count(*),
  percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - run_after)),
  percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - run_after)),
  extract(epoch FROM max(finished_at) - min(created_at))
FROM jobs WHERE status = 'succeeded'`).Scan(&n, &p50, &p99, &span)
		if err != nil {
			return rep, err
		}
		if n != o.Jobs {
			return rep, fmt.Errorf("%d of %d jobs succeeded", n, o.Jobs)
		}
		rep.PickupP50 = time.Duration(p50 * float64(time.Second))
		rep.PickupP99 = time.Duration(p99 * float64(time.Second))
		rep.Throughput = float64(n) / span
	}
	cancel()
	if err := <-listening; err != nil && !errors.Is(err, context.Canceled) {
		return rep, err
	}
	return rep, nil
}

// counters reads the database's statement count (pg_stat_statements, but
// for the statistics queries themselves) and transaction count.
func counters(ctx context.Context, pool *pgxpool.Pool, pss bool) (stmts, xacts int64, err error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return 0, 0, err
	}
	defer conn.Release()
	// Statistics are read in one transaction's snapshot; clear it first so
	// that both reads are fresh.
	if _, err := conn.Exec(ctx, `SELECT pg_stat_clear_snapshot()`); err != nil {
		return 0, 0, err
	}
	if pss {
		err = conn.QueryRow(ctx, `SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND query NOT LIKE '%pg_stat%' AND query NOT LIKE '%pg_extension%'`).Scan(&stmts)
		if err != nil {
			return 0, 0, err
		}
	}
	err = conn.QueryRow(ctx, `SELECT pg_stat_get_db_xact_commit(oid) + pg_stat_get_db_xact_rollback(oid)
FROM pg_database WHERE datname = current_database()`).Scan(&xacts)
	return stmts, xacts, err
}

// gameMaster inserts the jobs at the rate asked for, in small batches (one
// INSERT each, one notification per row).
func gameMaster(ctx context.Context, pool *pgxpool.Pool, o Options, hostID func(int) string) error {
	const tick = 10 * time.Millisecond
	perTick := max(1, int(o.Rate*tick.Seconds()))
	t := time.NewTicker(tick)
	defer t.Stop()
	for sent := 0; sent < o.Jobs; {
		n := min(perTick, o.Jobs-sent)
		hosts := make([]string, n)
		games := make([]string, n)
		for i := range n {
			hosts[i] = hostID(rand.IntN(o.Hosts))
			games[i] = fmt.Sprintf("g%d", sent+i)
		}
		if _, err := pool.Exec(ctx, `INSERT INTO jobs (host_id, game_id, kind, payload)
SELECT h, g, 'stop', '{}' FROM unnest($1::text[], $2::text[]) AS t(h, g)`, hosts, games); err != nil {
			return fmt.Errorf("insert jobs: %w", err)
		}
		sent += n
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// listen holds one LISTEN rtm_jobs connection for the whole process and
// wakes the worker of the host each notification names.
func listen(ctx context.Context, pool *pgxpool.Pool, wake func(hostID string)) error {
	conn, err := pgx.ConnectConfig(ctx, pool.Config().ConnConfig.Copy())
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN rtm_jobs"); err != nil {
		return err
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		wake(n.Payload)
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
