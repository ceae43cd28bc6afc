// Package queuebench measures rtmanager's job queue next to River on one
// PostgreSQL server, in one run, with rounds that alternate between the two
// so that a noisy, shared machine slows both alike.
//
// River runs as a Go dependency (github.com/riverqueue/river), configured as
// its own `river bench` command configures it; our queue runs through the
// worker's public API (worker.New with a no-op executor on a db.Store), as
// the agent runs it. Every figure has a baseline from the same run: raw
// one-row commits and a raw SKIP LOCKED claim + update on the same server
// over the same kind of connection.
package queuebench

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"
)

// Options configure a run. Zero values take the defaults noted.
type Options struct {
	// AdminURL points at a maintenance database of the server (for
	// example .../postgres); the run creates its own databases there and
	// drops them at the end. Required.
	AdminURL string
	// Sizes are the backlogs worked down, one row each (default 5,000,
	// 50,000 and 200,000).
	Sizes []int
	// Rounds per size and side, alternating River, ours, River, ... (3).
	Rounds int
	// Concurrency of our worker (default 8, the agent's RTM_CONCURRENCY
	// default).
	Concurrency int
	// Prefetch is our worker's Config.Prefetch: jobs a claim may take
	// beyond the free slots, held in its local buffer (default 0, the
	// agent's).
	Prefetch int
	// PoolSize, when set, is both sides' connection pool size. Zero: each
	// side's own default (River: pgxpool's, as `river bench` opens it;
	// ours: the agent's, max(Concurrency+6, 10)).
	PoolSize int
	// RiverMaxWorkers, RiverFetchCooldown and RiverFetchPollInterval are
	// River's settings (defaults 2,000, 2 ms and 20 ms: `river bench`'s).
	RiverMaxWorkers                            int
	RiverFetchCooldown, RiverFetchPollInterval time.Duration
	// RawCommits is the count of one-row commits of the commit baseline
	// (3,000); RawClaimJobs the backlog of the claim + update baseline
	// (20,000).
	RawCommits, RawClaimJobs int
	// Alongside is how long each side works while inserts run alongside
	// (default 0: not measured); AlongsideMin is the backlog the inserter
	// keeps (20,000).
	Alongside    time.Duration
	AlongsideMin int
	// Growth runs the growth rows (hot game, many games, finished jobs).
	Growth bool
	// GrowthBacklog is the queued backlog of the finished-jobs and games
	// rows (20,000); Finished the finished jobs already in the table
	// (1,000,000); ManyGames the games of the games row (10,000).
	GrowthBacklog, Finished, ManyGames int
	// HotJobs are queued for the hot game ahead of OtherGames games with
	// OtherJobsPerGame jobs each (10,000; 100; 100: a second of work, as
	// 1,000 jobs took ~0.1 s, too short to tell 10 % from noise).
	// PickupJobs of the other games are then inserted at OtherRate while
	// the latency is measured (1,000 at 500/s: 2 s, well within the hot
	// game's line).
	HotJobs, OtherGames, OtherJobsPerGame, PickupJobs int
	OtherRate                                         float64
	// OursSQL, when set, runs on our database after its migrations: a
	// variant of the schema priced beside the one the agent ships (the
	// report says so at its top). Empty: the shipped schema.
	OursSQL string
	// OursSQLName names OursSQL in the report (its file, say).
	OursSQLName string
	// ServerPID is the server's postmaster when the server runs on this
	// (Linux) machine, as StartServer's does: the CPU time of its
	// processes is then reported per job. Zero: not measured.
	ServerPID int
	// Progress receives one line per step. Nil: discarded.
	Progress io.Writer
	// Logger is both queues' logger. Nil: discarded.
	Logger *slog.Logger
}

func (o *Options) defaults() error {
	if o.AdminURL == "" {
		return errors.New("queuebench: AdminURL is required")
	}
	if len(o.Sizes) == 0 {
		o.Sizes = []int{5_000, 50_000, 200_000}
	}
	for _, n := range o.Sizes {
		if n < 1 {
			return fmt.Errorf("queuebench: backlog size %d: must be at least 1", n)
		}
	}
	setInt(&o.Rounds, 3)
	setInt(&o.Concurrency, 8)
	setInt(&o.RiverMaxWorkers, 2_000)
	if o.RiverFetchCooldown <= 0 {
		o.RiverFetchCooldown = 2 * time.Millisecond
	}
	if o.RiverFetchPollInterval <= 0 {
		o.RiverFetchPollInterval = 20 * time.Millisecond
	}
	setInt(&o.RawCommits, 3_000)
	setInt(&o.RawClaimJobs, 20_000)
	setInt(&o.AlongsideMin, 20_000)
	setInt(&o.GrowthBacklog, 20_000)
	setInt(&o.Finished, 1_000_000)
	setInt(&o.ManyGames, 10_000)
	setInt(&o.HotJobs, 10_000)
	setInt(&o.OtherGames, 100)
	setInt(&o.OtherJobsPerGame, 100)
	setInt(&o.PickupJobs, 1_000)
	if o.OtherRate <= 0 {
		o.OtherRate = 500
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	return nil
}

func setInt(v *int, def int) {
	if *v <= 0 {
		*v = def
	}
}

// Measure is one timed run: n jobs worked down (or worked while inserts
// ran) in Elapsed, and what the database did meanwhile.
type Measure struct {
	Jobs    int
	Elapsed time.Duration
	Cost    Cost
}

// PerSec is jobs per second.
func (m Measure) PerSec() float64 {
	if m.Elapsed <= 0 {
		return 0
	}
	return float64(m.Jobs) / m.Elapsed.Seconds()
}

// Cost is what the database did during a timed run.
type Cost struct {
	// Statements counts the statements of the side's database
	// (pg_stat_statements, utility statements such as BEGIN and COMMIT
	// included); -1 when pg_stat_statements is not loaded.
	Statements int64
	// WALBytes is the server's WAL written meanwhile
	// (pg_current_wal_lsn() delta: the whole cluster, autovacuum included).
	WALBytes int64
	// ExecMS is the server's execution time of those statements, in
	// milliseconds (pg_stat_statements' total_exec_time: triggers and
	// the functions they call included; planning, parsing and the time
	// between statements not).
	ExecMS float64
	// Top are the statements with the most calls, most first.
	Top []StatementCalls
	// ServerCPU is the CPU time the whole server used meanwhile (every
	// process of it, autovacuum included; -1 when Options.ServerPID is
	// not set), and ClientCPU that of this process (the side's client,
	// with whatever the harness did: little while it waits).
	ServerCPU, ClientCPU time.Duration
}

// StatementCalls is one normalised statement and its calls.
type StatementCalls struct {
	Query  string
	Calls  int64
	ExecMS float64
	// Plans and PlanMS stay 0 unless the server tracks planning.
	Plans  int64
	PlanMS float64
}

// SizeRow is one backlog size: each side's rounds, in the order run.
type SizeRow struct {
	Jobs        int
	River, Ours []Measure
	// Claim is the EXPLAIN (ANALYZE, BUFFERS) of our claim on the full
	// backlog; RiverFetch River's fetch on its full backlog. The Mid ones
	// are taken when half the backlog is done (first round).
	Claim, RiverFetch       Explain
	ClaimMid, RiverFetchMid Explain
}

// Raw are the baselines of one round.
type Raw struct {
	// CommitsPerSec: BEGIN, one-row INSERT, COMMIT on one pooled
	// connection.
	CommitsPerSec float64
	// ClaimUpdatePerSec: claim Concurrency rows with FOR UPDATE SKIP
	// LOCKED in id order, mark them done with one UPDATE, in jobs/s.
	ClaimUpdatePerSec float64
}

// Explain is an EXPLAIN (ANALYZE, BUFFERS) of one statement.
type Explain struct {
	// Statement names what was explained.
	Statement string
	// Custom is the plan for the parameter values of the call (what a
	// fresh connection runs); Generic the plan with
	// plan_cache_mode=force_generic_plan (what a connection that has run
	// the statement often may switch to).
	Custom, Generic string
}

// Report is a whole run.
type Report struct {
	Options    Options
	Server     string
	Settings   string
	Connection string
	PSS        bool
	Sizes      []SizeRow
	Raw        []Raw
	Alongside  struct{ River, Ours []Measure }
	Growth     []GrowthRow
	Elapsed    time.Duration
}

// GrowthRow compares a base workload with a grown one for one side.
type GrowthRow struct {
	Name       string
	Side       string
	Base, Grow Measure
	// What the figures of the row are (jobs/s unless Note says
	// otherwise).
	BaseLabel, GrowLabel string
	// Pickup latency (hot-game row), p50 and p99, base and grown.
	PickupBase, PickupGrow [2]time.Duration
	// BaseRounds and GrowRounds, when set, are the rounds Base and Grow
	// are the medians of (the hot-game row: pickup latencies are medians
	// of the rounds' too).
	BaseRounds, GrowRounds []Measure
	// Short is the hot-game row's third measure: the hot game doing the
	// same work from a short queue (its medians and rounds; see hotShort).
	Short       Measure
	ShortRounds []Measure
	PickupShort [2]time.Duration
	// HotRate is the hot game's own jobs run per second while the pickup
	// latency was measured, with the long queue and with the short one.
	HotRate [2]float64
	// HotMarked is the hot game's queued jobs marked the head at the end
	// of the pickup phase, long queue and short (medians of the rounds).
	// One is its head, unless that is running; the rest are marks that
	// inserts set when a finish of the game held the game's lock
	// (migration 000014), each a candidate that every claim reads and its
	// guard turns down until the line reaches it.
	HotMarked [2]float64
	// HotLeft: the hot game's jobs still queued when the latency window
	// ended in the first round (so the hot game was still ahead of the
	// others).
	HotLeft int
	// Claim plans on the base and the grown table.
	ClaimBase, ClaimGrow Explain
}
