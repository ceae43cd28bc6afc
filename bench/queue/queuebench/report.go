package queuebench

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"time"
)

// RiverVersion is the River module this program was built with.
func RiverVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/riverqueue/river" {
				return d.Version
			}
		}
	}
	return "(unknown version)"
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func rates(ms []Measure) []float64 {
	out := make([]float64, len(ms))
	for i, m := range ms {
		out[i] = m.PerSec()
	}
	return out
}

// perJob is the median over ms of f(m)/jobs; ok is false when f has no
// figure (-1).
func perJob(ms []Measure, f func(Measure) int64) (float64, bool) {
	var xs []float64
	for _, m := range ms {
		v := f(m)
		if v < 0 || m.Jobs == 0 {
			return 0, false
		}
		xs = append(xs, float64(v)/float64(m.Jobs))
	}
	return median(xs), len(xs) > 0
}

func stmts(m Measure) int64 { return m.Cost.Statements }
func wal(m Measure) int64   { return m.Cost.WALBytes }

// execNS is the statements' server execution time in nanoseconds, -1
// without pg_stat_statements.
func execNS(m Measure) int64 {
	if m.Cost.Statements < 0 {
		return -1
	}
	return int64(m.Cost.ExecMS * 1e6)
}

// serverNS and clientNS are the CPU time, in nanoseconds, of the whole
// server (-1 when not measured) and of this process.
func serverNS(m Measure) int64 {
	if m.Cost.ServerCPU < 0 {
		return -1
	}
	return m.Cost.ServerCPU.Nanoseconds()
}

func clientNS(m Measure) int64 { return m.Cost.ClientCPU.Nanoseconds() }

// fmtMicros is the median of f per job, in microseconds.
func fmtMicros(ms []Measure, f func(Measure) int64) string {
	v, ok := perJob(ms, f)
	if !ok {
		return "n/a"
	}
	return fmt.Sprintf("%.1f", v/1000)
}

func fmtExecPerJob(ms []Measure) string {
	v, ok := perJob(ms, execNS)
	if !ok {
		return "n/a"
	}
	return fmt.Sprintf("%.1f", v/1000)
}

func fmtRate(x float64) string { return count(int(x + 0.5)) }

func fmtRates(ms []Measure) string {
	parts := make([]string, len(ms))
	for i, m := range ms {
		parts[i] = fmtRate(m.PerSec())
	}
	return strings.Join(parts, " ")
}

func fmtPerJob(ms []Measure, f func(Measure) int64, format string) string {
	v, ok := perJob(ms, f)
	if !ok {
		return "n/a"
	}
	return fmt.Sprintf(format, v)
}

func ratio(a, b float64) string {
	if b == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f", a/b)
}

// riverPool is the pool size River ran with.
func (r *Report) riverPool() string {
	if r.Options.PoolSize > 0 {
		return fmt.Sprintf("%d connections", r.Options.PoolSize)
	}
	return fmt.Sprintf("pgxpool's default, %d connections here, as `river bench` opens it", max(4, runtime.NumCPU()))
}

func (r *Report) oursPool() string {
	if r.Options.PoolSize > 0 {
		return fmt.Sprintf("%d connections", r.Options.PoolSize)
	}
	return fmt.Sprintf("%d connections, as the agent sizes it", max(r.Options.Concurrency+6, 10))
}

// Markdown writes the report.
func (r *Report) Markdown(w io.Writer) {
	o := r.Options
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	p("## Queue: River and rtmanager side by side")
	p("")
	p("%s; %s; connection: %s; pg_stat_statements %s. Rounds per row: %d, alternating River, ours, River, …; the run took %s.",
		r.Server, r.Settings, r.Connection, map[bool]string{true: "loaded", false: "not loaded (no statement counts)"}[r.PSS],
		o.Rounds, r.Elapsed.Round(time.Second))
	p("")
	p("- River %s as `river bench` runs it: MaxWorkers %s, FetchCooldown %s, FetchPollInterval %s; a worker that returns nil; pool: %s.",
		RiverVersion(), count(o.RiverMaxWorkers), o.RiverFetchCooldown, o.RiverFetchPollInterval, r.riverPool())
	p("- ours: agent/worker as the agent runs it (LISTEN, batch finish, the agent's tracer and meter providers as `rtmanager run` sets them up, here with no exporter) with `worker.Noop`, concurrency %d, prefetch %d, one host; pool: %s.", o.Concurrency, o.Prefetch, r.oursPool())
	if o.OursSQL != "" {
		p("- **ours runs a schema variant, not the shipped schema:** %s was run on our database after its migrations.", o.OursSQLName)
	}
	p("")
	p("### Backlog worked down (jobs/s; each job a game of its own)")
	p("")
	p("| backlog | River jobs/s, median (rounds) | ours jobs/s, median (rounds) | ours/River | statements/job River · ours | statement µs/job River · ours | WAL bytes/job River · ours | server CPU µs/job River · ours | client CPU µs/job River · ours |")
	p("|---|---|---|---|---|---|---|---|---|")
	for _, row := range r.Sizes {
		rm, om := median(rates(row.River)), median(rates(row.Ours))
		p("| %s | **%s** (%s) | **%s** (%s) | **%s** | %s · %s | %s · %s | %s · %s | %s · %s | %s · %s |", count(row.Jobs),
			fmtRate(rm), fmtRates(row.River), fmtRate(om), fmtRates(row.Ours), ratio(om, rm),
			fmtPerJob(row.River, stmts, "%.3f"), fmtPerJob(row.Ours, stmts, "%.3f"),
			fmtExecPerJob(row.River), fmtExecPerJob(row.Ours),
			fmtPerJob(row.River, wal, "%.0f"), fmtPerJob(row.Ours, wal, "%.0f"),
			fmtMicros(row.River, serverNS), fmtMicros(row.Ours, serverNS),
			fmtMicros(row.River, clientNS), fmtMicros(row.Ours, clientNS))
	}
	p("")
	p("CPU per job (medians of the rounds): the server's is every process of it on this machine, from /proc, between the timed run's start and end (autovacuum and the WAL writer included; n/a for a server given by -database-url); the client's is this process (the side's client, with the harness's polling). With both sides' CPU in it, the machine's cores bound the rate: on a machine where they are all busy, jobs/s is about cores ÷ (server + client CPU per job).")
	var commits, claims []float64
	for _, raw := range r.Raw {
		commits = append(commits, raw.CommitsPerSec)
		claims = append(claims, raw.ClaimUpdatePerSec)
	}
	p("")
	p("Baselines of the same run, on the same server and connection kind (median, then rounds): one-row commits (`BEGIN; INSERT; COMMIT`) **%s/s** (%s); raw claim + update (%d rows per `FOR UPDATE SKIP LOCKED` claim in id order, one `UPDATE` to finish them; no per-game order, lease check, lock or outbox) of %s jobs **%s jobs/s** (%s).",
		fmtRate(median(commits)), joinRates(commits), o.Concurrency, count(o.RawClaimJobs), fmtRate(median(claims)), joinRates(claims))
	p("")
	p("Claim cost, first round: `EXPLAIN (ANALYZE, BUFFERS)` of each side's claim (custom plan: execution time, the top node's buffers) on the full backlog, and again beside the running queue once half the backlog is done (dead row versions of the done half included):")
	p("")
	p("| backlog | River's fetch of up to %s jobs: full · half done | our claim of up to %d jobs: full · half done |", count(o.RiverMaxWorkers), o.Concurrency+o.Prefetch)
	p("|---|---|---|")
	for _, row := range r.Sizes {
		p("| %s | %s · %s | %s · %s |", count(row.Jobs), keyLines(row.RiverFetch.Custom), keyLines(row.RiverFetchMid.Custom),
			keyLines(row.Claim.Custom), keyLines(row.ClaimMid.Custom))
	}
	if len(r.Alongside.River) > 0 {
		rm, om := median(rates(r.Alongside.River)), median(rates(r.Alongside.Ours))
		p("")
		p("### Inserts alongside")
		p("")
		p("Each side works for %s while its producer keeps at least %s jobs queued, inserting 5,000 at a time (`river bench` without `-n`; ours: one multi-row `INSERT`).", o.Alongside, count(o.AlongsideMin))
		p("")
		p("| River jobs/s, median (rounds) | ours jobs/s, median (rounds) | ours/River | statements/job River · ours | WAL bytes/job River · ours |")
		p("|---|---|---|---|---|")
		p("| **%s** (%s) | **%s** (%s) | **%s** | %s · %s | %s · %s |", fmtRate(rm), fmtRates(r.Alongside.River), fmtRate(om), fmtRates(r.Alongside.Ours), ratio(om, rm),
			fmtPerJob(r.Alongside.River, stmts, "%.3f"), fmtPerJob(r.Alongside.Ours, stmts, "%.2f"),
			fmtPerJob(r.Alongside.River, wal, "%.0f"), fmtPerJob(r.Alongside.Ours, wal, "%.0f"))
	}
	r.growthMarkdown(w)
	r.statementsMarkdown(w)
	p("")
	p("### What each side's no-op job includes")
	p("")
	p("%s", workloadText(o))
	r.explainMarkdown(w)
}

func joinRates(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmtRate(x)
	}
	return strings.Join(parts, " ")
}

func (r *Report) growthMarkdown(w io.Writer) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	type line struct{ what, side, base, grow, ratio, claim string }
	var lines []line
	// Backlog: the two largest sizes of the main table.
	if len(r.Sizes) >= 2 {
		sizes := slices.Clone(r.Sizes)
		slices.SortFunc(sizes, func(a, b SizeRow) int { return a.Jobs - b.Jobs })
		a, b := sizes[len(sizes)-2], sizes[len(sizes)-1]
		for _, s := range []struct {
			name   string
			ma, mb []Measure
			ea, eb Explain
		}{{"River", a.River, b.River, a.RiverFetch, b.RiverFetch}, {"ours", a.Ours, b.Ours, a.Claim, b.Claim}} {
			ra, rb := median(rates(s.ma)), median(rates(s.mb))
			lines = append(lines, line{fmt.Sprintf("backlog %s → %s", count(a.Jobs), count(b.Jobs)), s.name,
				fmtRate(ra) + " jobs/s", fmtRate(rb) + " jobs/s", ratio(rb, ra), keyLines(s.ea.Custom) + " → " + keyLines(s.eb.Custom)})
		}
	}
	for _, g := range r.Growth {
		base, grow := g.Base.PerSec(), g.Grow.PerSec()
		what := map[string]string{"finished": "finished jobs in the table", "games": "many games", "hot": "hot game: the other games' throughput"}[g.Name]
		baseFig, growFig := fmtRate(base)+" jobs/s", fmtRate(grow)+" jobs/s"
		if len(g.BaseRounds) > 1 {
			baseFig, growFig = fmtRate(base)+" jobs/s ("+fmtRates(g.BaseRounds)+")", fmtRate(grow)+" jobs/s ("+fmtRates(g.GrowRounds)+")"
		}
		lines = append(lines, line{what + " (" + g.BaseLabel + " → " + g.GrowLabel + ")", g.Side,
			baseFig, growFig, ratio(grow, base), keyLines(g.ClaimBase.Custom) + " → " + keyLines(g.ClaimGrow.Custom)})
		if g.Name == "hot" {
			pickup := func(p [2]time.Duration) string { return fmt.Sprintf("%s / %s", ms(p[0]), ms(p[1])) }
			lines = append(lines, line{fmt.Sprintf("hot game: the other games' pickup p50 / p99, %s jobs inserted at %.0f/s (%s of the hot game's jobs still queued after)", count(r.Options.PickupJobs), r.Options.OtherRate, count(g.HotLeft)), g.Side,
				pickup(g.PickupBase), pickup(g.PickupGrow),
				ratio(float64(g.PickupGrow[1]), float64(g.PickupBase[1])) + " (p99)", ""})
			if len(g.ShortRounds) > 0 {
				short := fmt.Sprintf("the same work from a short queue, %d–%d of the hot game's jobs queued", hotShortLow, hotShortLow+hotTopUp)
				lines = append(lines, line{"hot game's backlog alone: the other games' throughput (" + short + " → " + count(r.Options.HotJobs) + " queued)", g.Side,
					fmtRate(g.Short.PerSec()) + " jobs/s (" + fmtRates(g.ShortRounds) + ")", fmtRate(grow) + " jobs/s",
					ratio(grow, g.Short.PerSec()), ""})
				lines = append(lines, line{fmt.Sprintf("hot game's backlog alone: the other games' pickup p50 / p99 (the hot game ran %s jobs/s from the short queue, %s from the long one; %.0f and %.0f of its queued jobs marked the head at the end)", fmtRate(g.HotRate[1]), fmtRate(g.HotRate[0]), g.HotMarked[1], g.HotMarked[0]), g.Side,
					pickup(g.PickupShort), pickup(g.PickupGrow),
					ratio(float64(g.PickupGrow[1]), float64(g.PickupShort[1])) + " (p99)", ""})
			}
		}
	}
	if len(lines) == 0 {
		return
	}
	p("")
	p("### Flat as the work grows (target: grown within 10 %% of base)")
	p("")
	p("One run per row, except: the backlog row gives the medians of the rounds above, and the hot-game rows the medians of %d rounds of base, grown and short queue, alternating (pickup: the medians of each round's p50 and p99). The hot game runs one job at a time beside the others, on the same cores, and gets %s new jobs for every %s it runs: the base has no hot game at all, and the short-queue rounds give it the same work and inserts with a queue of a few hundred, so that grown against short is what its backlog costs.", r.Options.Rounds, count(hotTopUp), count(hotTopUp))
	p("")
	p("The claim column is `EXPLAIN (ANALYZE, BUFFERS)` of the side's claim on the full backlog, custom plan: execution time and the top node's buffers.")
	p("")
	p("| row | side | base | grown | grown/base | claim, base → grown |")
	p("|---|---|---|---|---|---|")
	for _, l := range lines {
		p("| %s | %s | %s | %s | **%s** | %s |", l.what, l.side, l.base, l.grow, l.ratio, l.claim)
	}
	for _, g := range r.Growth {
		if g.Name != "hot" || g.Base.Jobs == 0 || g.Grow.Jobs == 0 {
			continue
		}
		p("")
		p("The hot-game row's throughput phase, its median rounds, per 100 of the other games' jobs (the hot game's own jobs are in the work of the grown and short-queue rounds):")
		p("")
		p("| | claims | finishes | server CPU ms | client CPU ms |")
		p("|---|---|---|---|---|")
		for _, m := range []struct {
			name string
			m    Measure
		}{{"base", g.Base}, {"grown", g.Grow}, {"short queue", g.Short}} {
			if m.m.Jobs == 0 {
				continue
			}
			per100 := func(x float64) string { return fmt.Sprintf("%.1f", x*100/float64(m.m.Jobs)) }
			claims, finishes := "n/a", "n/a"
			if m.m.Cost.Statements >= 0 {
				claims, finishes = per100(float64(calls(m.m.Cost, "name: ClaimJobs "))), per100(float64(calls(m.m.Cost, "name: FinishJobs ")))
			}
			server := "n/a"
			if m.m.Cost.ServerCPU >= 0 {
				server = per100(m.m.Cost.ServerCPU.Seconds() * 1000)
			}
			p("| %s | %s | %s | %s | %s |", m.name, claims, finishes, server, per100(m.m.Cost.ClientCPU.Seconds()*1000))
		}
	}
}

// calls counts the calls of the statements of c whose text contains name.
func calls(c Cost, name string) int64 {
	var n int64
	for _, s := range c.Top {
		if strings.Contains(s.Query, name) {
			n += s.Calls
		}
	}
	return n
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

// statementsMarkdown lists the busiest statements of the largest backlog's
// last round, per job.
func (r *Report) statementsMarkdown(w io.Writer) {
	if !r.PSS || len(r.Sizes) == 0 {
		return
	}
	row := slices.MaxFunc(r.Sizes, func(a, b SizeRow) int { return a.Jobs - b.Jobs })
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	p("")
	p("### Statements per job, backlog %s, last round (pg_stat_statements)", count(row.Jobs))
	for _, s := range []struct {
		name string
		ms   []Measure
	}{{"River", row.River}, {"ours", row.Ours}} {
		if len(s.ms) == 0 {
			continue
		}
		m := s.ms[len(s.ms)-1]
		p("")
		p("%s: %.3f statements, %.1f µs of statement execution and %.0f WAL bytes per job.", s.name,
			float64(m.Cost.Statements)/float64(m.Jobs), m.Cost.ExecMS*1000/float64(m.Jobs), float64(m.Cost.WALBytes)/float64(m.Jobs))
		p("")
		// Plans are counted only with pg_stat_statements.track_planning on
		// (-set pg_stat_statements.track_planning=on).
		p("| calls/job | µs/job | plans per call | planning µs/job | statement |")
		p("|---|---|---|---|---|")
		for _, t := range m.Cost.Top {
			q := t.Query
			if len(q) > 110 {
				q = q[:110] + "…"
			}
			perCall := 0.0
			if t.Calls > 0 {
				perCall = float64(t.Plans) / float64(t.Calls)
			}
			p("| %.4f | %.1f | %.2f | %.1f | `%s` |", float64(t.Calls)/float64(m.Jobs), t.ExecMS*1000/float64(m.Jobs),
				perCall, t.PlanMS*1000/float64(m.Jobs), strings.ReplaceAll(q, "|", "\\|"))
		}
	}
}

func (r *Report) explainMarkdown(w io.Writer) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	block := func(title string, ex Explain) {
		if ex.Custom == "" {
			return
		}
		p("")
		p("#### %s — %s", title, ex.Statement)
		p("")
		p("```text")
		p("-- custom plan (for these parameter values)")
		fmt.Fprint(w, ex.Custom)
		p("-- generic plan (plan_cache_mode=force_generic_plan)")
		fmt.Fprint(w, ex.Generic)
		p("```")
	}
	p("")
	p("### EXPLAIN (ANALYZE, BUFFERS) of the claim")
	p("")
	p("Each in a transaction that is rolled back: on the full backlog before the timed run (a VACUUM then removes the row versions it left), and in the first round also beside the running queue once half the backlog is done. The statement and its arguments are recorded from the real call (`db.Store.ClaimJobs`, River's `JobGetAvailable`), never copied.")
	for _, row := range r.Sizes {
		block(fmt.Sprintf("backlog %s, River, full", count(row.Jobs)), row.RiverFetch)
		block(fmt.Sprintf("backlog %s, River, half done", count(row.Jobs)), row.RiverFetchMid)
		block(fmt.Sprintf("backlog %s, ours, full", count(row.Jobs)), row.Claim)
		block(fmt.Sprintf("backlog %s, ours, half done", count(row.Jobs)), row.ClaimMid)
	}
	for _, g := range r.Growth {
		block(fmt.Sprintf("%s, %s, base: %s", g.Name, g.Side, g.BaseLabel), g.ClaimBase)
		block(fmt.Sprintf("%s, %s, grown: %s", g.Name, g.Side, g.GrowLabel), g.ClaimGrow)
	}
}

func workloadText(o Options) string {
	return fmt.Sprintf(`**ours** (what BenchmarkQueueNoop and the agent run): one statement claims up to the free slots (concurrency %d) of the host's due jobs, in id order, each only if no earlier job of its game is queued or running (per-game FIFO), with FOR UPDATE SKIP LOCKED, and gives each a lease (owner, expiry, attempt, started_at). Every job's payload is decoded and validated against the policy, gets a span, and runs on a goroutine of its own; a renewal loop extends the leases of jobs in flight. The batch finisher then writes the outcomes of the jobs in flight in one statement and one transaction: it takes each game's advisory transaction lock (in key order), sets each job succeeded only if it is still running under this owner and attempt, and appends one outbox event per job (carrying its transaction id, for the Game Master's gap-free reader; a statement trigger notifies outbox readers). Inserts are plain INSERTs whose row trigger notifies the host's agent. Freed slots are refilled by the next claim.

**River** (what `+"`river bench`"+` runs): one statement locks up to MaxWorkers (%s) minus running available jobs of the queue (FOR UPDATE SKIP LOCKED, in priority, scheduled_at, id order) and marks them running (attempt, attempted_at, attempted_by). Each job runs on a goroutine; its completion goes to the batch completer, which marks up to 5,000 jobs completed per statement. There is no per-key order, no lease (a job stuck running is rescued after RescueStuckJobsAfter, 1 h by default), no transaction per job, and no event row: completion events go to in-process subscribers only. The client also runs a leader election, maintenance services and producer heartbeats; their statements are in its counts. Inserts are InsertMany calls of 5,000 jobs, with a notification to the producers.`,
		o.Concurrency, count(o.RiverMaxWorkers))
}
