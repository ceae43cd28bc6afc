package worker

import (
	"context"
	"errors"
	"time"

	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/domain/job"
)

// sideClaimMax bounds a side claim (see claimArrivals): it is for the
// few jobs queued while one claim runs, and what it leaves the claim loop
// is what the loop's next claim takes.
const sideClaimMax = 8

// claim runs the claim statement (db.Store.Claim): it fills the free
// slots and the local buffer (reserve), cancels the queued jobs whose
// cancel was asked for, and arms due for the next job that is not yet
// due, so that a scheduled job (or a retry after its backoff) is claimed
// when it falls due rather than at the next poll. It reports whether there
// may be more to do at once: every slot it asked for was filled, or a
// cancel let a game's next job through.
//
// Once a claim has come back short (the queue had run dry) the next one
// leaves a few slots to a side claim, so that a job queued while it runs
// need not wait for it. A claim that fills what it asked for is followed
// at once by one that asks for the rest.
//
// With every slot taken (or the buffer more than half full) it still runs the statement, claiming nothing, to
// see cancel requests and the next due time at once, except when the loop
// is only looking again after a claim of its own (again): then nothing new
// can have arrived, and a freed slot wakes the loop anyway.
func (w *Worker) claim(ctx context.Context, due *time.Timer, again bool) bool {
	keep := 0
	if w.lastShort {
		keep = sideClaimMax
	}
	ask := w.reserve(keep, 0)
	if ask == 0 && again {
		return false
	}
	w.claimBusy.Store(true)
	c, err := w.claimJobs(ctx, ask)
	w.claimBusy.Store(false)
	if err != nil {
		if ctx.Err() == nil {
			w.log.Warn("claiming jobs failed; retrying at the next poll", "host_id", w.cfg.HostID, "err", err)
		}
		return false
	}
	w.lastShort = len(c.Jobs) < ask
	// NextDue is counted from the statement's start on the database's
	// clock; counting it from now errs on the late side by a round trip,
	// never early.
	if c.NextDue > 0 {
		due.Reset(c.NextDue)
	} else {
		due.Stop()
	}
	more := ask > 0 && len(c.Jobs) == ask
	if len(c.CancelIDs) > 0 && w.cancelRequested(ctx, c.CancelIDs) {
		more = true
	}
	return more
}

// claimArrivals is the side claim. A busy host's claim loop is nearly
// always in a claim (one game's line of short jobs: each end lets the
// next one through), and a job queued meanwhile would wait for that claim
// to end and for one more. A notification that comes while the loop's
// statement runs claims at once instead, at most sideClaimMax jobs, in
// the slots no claim in flight asked for. It leaves cancels and the next
// due time to the claim loop, which the same notification woke.
func (w *Worker) claimArrivals(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.arrived:
		}
		if ctx.Err() != nil {
			return // both were ready: no new work once stopping
		}
		ask := w.reserve(0, sideClaimMax)
		if ask == 0 {
			continue
		}
		c, err := w.claimJobs(ctx, ask)
		switch {
		case err != nil:
			if ctx.Err() == nil {
				w.log.Warn("claiming newly queued jobs failed; the claim loop will look again", "host_id", w.cfg.HostID, "err", err)
			}
		case len(c.Jobs) == ask:
			w.signal() // there may be more
		}
	}
}

// claimJobs runs the claim statement for ask jobs, which reserve has set
// aside, and starts the jobs it claimed.
func (w *Worker) claimJobs(ctx context.Context, ask int) (db.Claim, error) {
	sent := time.Now()
	// The statement runs to its end even if ctx ends meanwhile. pgx gives
	// up on a cancelled statement at once, but one already sent may still
	// commit on the server: its jobs would then be running under this
	// agent's lease unseen by it, neither run nor released by the drain,
	// until the lease expired. A claim slower than a lease is of no use.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.cfg.LeaseDuration)
	c, err := w.store.Claim(cctx, w.cfg.HostID, w.cfg.Owner, ask, w.cfg.LeaseDuration)
	cancel()
	if err != nil {
		c = db.Claim{}
	}
	w.start(c.Jobs, ask, sent, time.Now())
	return c, err
}

// cancelRequested cancels queued jobs whose cancel the Game Master asked
// for (cancel_requested_at), each in a transaction of its own that takes
// the game's lock before its first write and appends the job.cancelled
// event: the same path as rtmclient.CancelJob. A job claimed or finished
// meanwhile (by another worker of the host, or the Game Master's client)
// is left to whoever has it. It reports whether the loop should look
// again: a job was cancelled (its game's next job may now be due) or the
// list was full.
func (w *Worker) cancelRequested(ctx context.Context, ids []int64) bool {
	more := false
	for _, id := range ids {
		j, err := w.store.CancelJob(ctx, id)
		switch {
		case errors.Is(err, db.ErrJobFinished), errors.Is(err, db.ErrJobNotFound):
			continue
		case err != nil:
			if ctx.Err() == nil {
				w.log.Warn("cancelling a job on request failed; retrying at the next poll", "job_id", id, "err", err)
			}
			return more
		case j.Status == job.StatusCancelled:
			more = true
			w.cancelled.Add(1)
			w.metrics.outcome(kindAttr(j.Kind), string(job.StatusCancelled))
			w.log.Info("job cancelled on request before it ran", "job_id", j.ID, "game_id", j.GameID, "kind", j.Kind, "run_after", j.RunAfter)
		}
	}
	return more || len(ids) >= db.MaxCancels
}
