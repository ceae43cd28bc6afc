package queuebench

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/galaxy/rtmanager/agent/worker"
)

// growth runs the rows that check the cost stays flat as the work grows.
// The backlog row (the two largest sizes) needs no run of its own.
func (h *harness) growth(ctx context.Context, rep *Report) error {
	o := h.opts
	n := o.GrowthBacklog
	for _, s := range []side{h.river, h.ours} {
		row := GrowthRow{Name: "finished", Side: s.name(),
			BaseLabel: fmt.Sprintf("%s queued, empty table", count(n)),
			GrowLabel: fmt.Sprintf("%s queued, %s finished jobs in the table", count(n), count(o.Finished))}
		var err error
		h.progress("growth: %s works down %d jobs on an empty table", s.name(), n)
		if row.Base, row.ClaimBase, err = h.backlogRound(ctx, s, n, true, nil, nil); err != nil {
			return err
		}
		h.progress("growth: %s works down %d jobs behind %d finished jobs", s.name(), n, o.Finished)
		fill := func(ctx context.Context, r *runner) error {
			if err := s.addFinished(ctx, o.Finished); err != nil {
				return err
			}
			return r.insert(ctx, n)
		}
		if row.Grow, row.ClaimGrow, err = h.backlogRound(ctx, s, n, true, fill, nil); err != nil {
			return err
		}
		rep.Growth = append(rep.Growth, row)
	}

	// Games: the same backlog over a few games and over many.
	row := GrowthRow{Name: "games", Side: h.ours.name(),
		BaseLabel: fmt.Sprintf("%s queued over 100 games", count(n)),
		GrowLabel: fmt.Sprintf("%s queued over %s games", count(n), count(o.ManyGames))}
	for i, games := range []int{100, o.ManyGames} {
		h.progress("growth: ours works down %d jobs of %d games", n, games)
		m, ex, err := h.backlogRound(ctx, h.ours, n, true, func(ctx context.Context, _ *runner) error {
			return h.ours.insertGames(ctx, n, "m", games)
		}, nil)
		if err != nil {
			return err
		}
		if i == 0 {
			row.Base, row.ClaimBase = m, ex
		} else {
			row.Grow, row.ClaimGrow = m, ex
		}
	}
	rep.Growth = append(rep.Growth, row)

	hot, err := h.hotGame(ctx)
	if err != nil {
		return err
	}
	rep.Growth = append(rep.Growth, hot)
	return nil
}

// hotGameID is the hot game's id: insertGames(ctx, n, "hot", 1) names its
// one game "hot" || 0.
const hotGameID = "hot0"

// hotMode is what a round of the hot-game row puts ahead of the others.
type hotMode int

const (
	hotNone   hotMode = iota // the others alone: the base
	hotQueued                // the hot game with HotJobs queued: grown
	// hotShort is the hot game doing the same work from a short queue
	// (between hotShortLow and hotShortLow + hotTopUp jobs queued).
	// Against it, the grown round shows what the hot game's backlog costs
	// the others, apart from what its work (one job at a time, beside
	// theirs on the same cores) does.
	hotShort
)

// Both rounds with a hot game insert hotTopUp of its jobs for every
// hotTopUp it runs, as a Game Master feeding it would: the short queue
// stays short and the long one long, at the same cost.
const hotShortLow, hotTopUp = 100, 20

// hotGame puts one game with HotJobs queued jobs ahead of OtherGames games
// with OtherJobsPerGame jobs each, and measures the other games: their
// throughput working down their backlog, then their pickup latency for
// PickupJobs jobs inserted at OtherRate while the hot game's jobs are
// still queued. The hot game's queue is topped up as it runs (hotTopUp).
// The base is the same without the hot game, and the short rounds the
// same with the hot game's queue kept short (hotShort). The row is short
// (the others' backlog takes about a second), so one round of each is at
// the mercy of the machine: it runs Rounds rounds of each, alternating,
// and reports the medians.
func (h *harness) hotGame(ctx context.Context) (GrowthRow, error) {
	o := h.opts
	others := o.OtherGames * o.OtherJobsPerGame
	row := GrowthRow{Name: "hot", Side: h.ours.name(),
		BaseLabel: fmt.Sprintf("%d games × %d jobs", o.OtherGames, o.OtherJobsPerGame),
		GrowLabel: fmt.Sprintf("the same behind one game with %s queued jobs", count(o.HotJobs))}
	var rounds [3][]hotResult
	for round := range o.Rounds {
		for _, mode := range []hotMode{hotNone, hotQueued, hotShort} {
			h.progress("growth: ours, %d other games' jobs, hot game %s, round %d", others, mode, round+1)
			res, err := h.hotRound(ctx, mode, others)
			if err != nil {
				return row, err
			}
			rounds[mode] = append(rounds[mode], res)
			if round == 0 {
				switch mode {
				case hotNone:
					row.ClaimBase = res.claim
				case hotQueued:
					row.ClaimGrow, row.HotLeft = res.claim, res.hotLeft
				}
			}
		}
	}
	summary := func(rs []hotResult) (all []Measure, m Measure, pickup [2]time.Duration, hotRate, marked float64) {
		var p50, p99, rates, marks []float64
		for _, r := range rs {
			all = append(all, r.m)
			p50, p99 = append(p50, r.pickup[0].Seconds()), append(p99, r.pickup[1].Seconds())
			rates, marks = append(rates, r.hotPerSec), append(marks, float64(r.hotMarked))
		}
		seconds := func(xs []float64) time.Duration { return time.Duration(median(xs) * float64(time.Second)) }
		return all, medianMeasure(all), [2]time.Duration{seconds(p50), seconds(p99)}, median(rates), median(marks)
	}
	row.BaseRounds, row.Base, row.PickupBase, _, _ = summary(rounds[hotNone])
	row.GrowRounds, row.Grow, row.PickupGrow, row.HotRate[0], row.HotMarked[0] = summary(rounds[hotQueued])
	row.ShortRounds, row.Short, row.PickupShort, row.HotRate[1], row.HotMarked[1] = summary(rounds[hotShort])
	return row, nil
}

func (m hotMode) String() string {
	return [...]string{"none", "with a long queue", "with a short queue"}[m]
}

// medianMeasure is the measure of the median rate (of an even number, the
// lower of the middle two).
func medianMeasure(ms []Measure) Measure {
	s := slices.Clone(ms)
	slices.SortFunc(s, func(a, b Measure) int { return cmp.Compare(a.PerSec(), b.PerSec()) })
	return s[(len(s)-1)/2]
}

// hotResult is one round of the hot-game row.
type hotResult struct {
	m      Measure // the others' backlog
	claim  Explain
	pickup [2]time.Duration // the others' pickup p50 and p99
	// hotLeft is the hot game's jobs still queued at the round's end, and
	// hotMarked those of them marked the head (see GrowthRow.HotMarked);
	// hotPerSec its jobs run per second in the pickup phase.
	hotLeft, hotMarked int
	hotPerSec          float64
}

func (h *harness) hotRound(ctx context.Context, mode hotMode, others int) (res hotResult, err error) {
	o, opts := h.ours, h.opts
	if err = o.reset(ctx); err != nil {
		return
	}
	switch mode {
	case hotQueued:
		err = o.insertGames(ctx, opts.HotJobs, "hot", 1)
	case hotShort:
		err = o.insertGames(ctx, hotShortLow+hotTopUp, "hot", 1)
	}
	if err != nil {
		return
	}
	if err = o.insertGames(ctx, others, "o", opts.OtherGames); err != nil {
		return
	}
	if err = o.settle(ctx); err != nil {
		return
	}
	// The jobs run are counted in process, so that waiting for them costs
	// the server nothing until they have all run: a count of the table
	// every 10 ms took a share of the two cores that grew with the hot
	// game's rows, which the grown round then paid.
	var othersRan, hotRan atomic.Int64
	hotRun := make(chan struct{}, 1)
	r, err := o.prepareWith(ctx, worker.ExecutorFunc(func(_ context.Context, t worker.Task) (worker.Result, error) {
		if t.Job.GameID != hotGameID {
			othersRan.Add(1)
			return worker.Result{}, nil
		}
		hotRan.Add(1)
		select {
		case hotRun <- struct{}{}:
		default:
		}
		return worker.Result{}, nil
	}))
	if err != nil {
		return
	}
	stop := sync.OnceValue(r.stop)
	defer func() { _ = stop() }()
	if res.claim, err = r.explain(ctx); err != nil {
		return
	}
	if err = o.settle(ctx); err != nil {
		return
	}
	topUpErr := make(chan error, 1)
	if mode != hotNone {
		// Stopped and waited for before the round ends, so that no insert
		// of it lands in the next round.
		tctx, cancel := context.WithCancel(ctx)
		var topUps sync.WaitGroup
		topUps.Go(func() { topUpErr <- o.topUpHot(tctx, &hotRan, hotRun) })
		defer func() { cancel(); topUps.Wait() }()
	}

	// Throughput of the others' backlog, from the database's clock.
	var t0 time.Time
	if err = o.pool.QueryRow(ctx, "/* queuebench */ SELECT clock_timestamp()").Scan(&t0); err != nil {
		return
	}
	at, err := h.meter.start(ctx)
	if err != nil {
		return
	}
	if err = r.begin(); err != nil {
		return
	}
	if err = h.waitOthers(ctx, r, &othersRan, others, 0, others); err != nil {
		return
	}
	if res.m.Cost, err = h.meter.stop(ctx, at, o.datname()); err != nil {
		return
	}
	var span float64
	if err = o.pool.QueryRow(ctx, `/* queuebench */ SELECT extract(epoch FROM max(finished_at) - $1)::float8
FROM jobs WHERE game_id <> $2 AND status = 'succeeded'`, t0, hotGameID).Scan(&span); err != nil {
		return
	}
	res.m.Jobs, res.m.Elapsed = others, time.Duration(span*float64(time.Second))

	// Pickup latency of jobs inserted while the hot game's are queued.
	var after int64
	if err = o.pool.QueryRow(ctx, "/* queuebench */ SELECT coalesce(max(id), 0) FROM jobs").Scan(&after); err != nil {
		return
	}
	hot0, began := hotRan.Load(), time.Now()
	if err = h.insertAtRate(ctx, opts.PickupJobs, opts.OtherRate, opts.OtherGames); err != nil {
		return
	}
	if err = h.waitOthers(ctx, r, &othersRan, others+opts.PickupJobs, after, opts.PickupJobs); err != nil {
		return
	}
	res.hotPerSec = float64(hotRan.Load()-hot0) / time.Since(began).Seconds()
	select {
	case err = <-topUpErr:
		return // it stops only on an error before its context ends
	default:
	}
	var p50, p99 float64
	if err = o.pool.QueryRow(ctx, `/* queuebench */ SELECT
  percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - run_after)),
  percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - run_after))
FROM jobs WHERE id > $1 AND game_id <> $2`, after, hotGameID).Scan(&p50, &p99); err != nil {
		return
	}
	res.pickup = [2]time.Duration{time.Duration(p50 * float64(time.Second)), time.Duration(p99 * float64(time.Second))}
	if err = o.pool.QueryRow(ctx, "/* queuebench */ SELECT count(*), count(*) FILTER (WHERE is_head) FROM jobs WHERE game_id = $1 AND status = 'queued'", hotGameID).Scan(&res.hotLeft, &res.hotMarked); err != nil {
		return
	}
	err = stop()
	return
}

// topUpHot inserts hotTopUp jobs of the hot game each time it has run
// another hotTopUp (ran, with a signal on run). It counts from what the
// executor ran, so that it costs the server no statement but the inserts.
// It returns when ctx ends.
func (o *ours) topUpHot(ctx context.Context, ran *atomic.Int64, run <-chan struct{}) error {
	next := int64(hotTopUp)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-run:
		}
		if ran.Load() < next {
			continue
		}
		if err := o.insertGames(ctx, hotTopUp, "hot", 1); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		next += hotTopUp
	}
}

// waitOthers waits until the n jobs of other games than the hot one with
// ids above after have succeeded: first, without a statement, until ran
// (the other games' jobs run so far) reaches ranTarget, then by counting
// them in the table.
func (h *harness) waitOthers(ctx context.Context, r *runner, ran *atomic.Int64, ranTarget int, after int64, n int) error {
	deadline := time.Now().Add(5 * time.Minute)
	for ran.Load() < int64(ranTarget) {
		if err := r.failed(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ours: only %d of the other games' jobs run in 5 minutes, waiting for %d", ran.Load(), ranTarget)
		}
		time.Sleep(time.Millisecond) // benchmark polling of an in-process counter
	}
	for {
		var done int
		if err := h.ours.pool.QueryRow(ctx, `/* queuebench */ SELECT count(*) FROM jobs
WHERE id > $1 AND game_id <> $2 AND status = 'succeeded'`, after, hotGameID).Scan(&done); err != nil {
			return err
		}
		if done >= n {
			return nil
		}
		if err := r.failed(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ours: only %d of the other games' %d jobs done in 5 minutes", done, n)
		}
		time.Sleep(time.Millisecond) // benchmark polling: the last batch's commit
	}
}

// insertAtRate inserts n jobs of the other games at rate per second, in a
// small INSERT every 10 ms (as the fleet simulation's Game Master).
func (h *harness) insertAtRate(ctx context.Context, n int, rate float64, games int) error {
	const tick = 10 * time.Millisecond
	per := max(1, int(rate*tick.Seconds()))
	t := time.NewTicker(tick)
	defer t.Stop()
	for sent := 0; sent < n; sent += per {
		k := min(per, n-sent)
		if _, err := h.ours.pool.Exec(ctx, `/* queuebench */ INSERT INTO jobs (host_id, game_id, kind)
SELECT $1, 'o' || (i % $2), 'stop' FROM generate_series($3::int, $3::int + $4 - 1) AS i`, benchHost, games, sent, k); err != nil {
			return fmt.Errorf("ours: insert at rate: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// count renders n with thousands separators.
func count(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
