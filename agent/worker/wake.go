package worker

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/galaxy/rtmanager/internal/retry"
)

// Wake makes the worker look for due jobs now, as a LISTEN notification for
// its host would. It never blocks. It is for a process that runs many
// workers and shares one LISTEN connection among them (the fleet load
// simulation) instead of one per worker (Config.UseListen).
func (w *Worker) Wake() { w.jobArrived() }

// jobArrived wakes the claim loop for a job just queued, and asks for a
// side claim if the loop is in the middle of a claim (see claimArrivals).
func (w *Worker) jobArrived() {
	w.signal()
	if w.claimBusy.Load() {
		select {
		case w.arrived <- struct{}{}:
		default:
		}
	}
}

// listen keeps a session connection with LISTEN rtm_jobs and wakes the
// claim loop on notifications for this host; on rtm_jobs_cancel (a cancel
// asked for a job an agent holds, running or buffered) it renews the
// leases at once, which is where a held job's cancel is learnt. It
// reconnects with backoff; polling and the renewal interval cover the
// gaps.
func (w *Worker) listen(ctx context.Context) {
	bo := retry.Backoff(100*time.Millisecond, 10*time.Second)
	for ctx.Err() == nil {
		err := w.listenOnce(ctx)
		w.listening.Store(false)
		if ctx.Err() != nil {
			return
		}
		delay := bo.NextBackOff()
		w.log.Warn("job notifications interrupted; polling until reconnected", "retry_in", delay, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
	}
}

func (w *Worker) listenOnce(ctx context.Context) error {
	// A connection of its own, not one of the pool: it is held for as long
	// as the agent runs and must not shrink the pool.
	conn, err := pgx.ConnectConfig(ctx, w.store.Pool().Config().ConnConfig.Copy())
	if err != nil {
		return fmt.Errorf("connect for LISTEN: %w", err)
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN rtm_jobs; LISTEN rtm_jobs_cancel"); err != nil {
		return fmt.Errorf("LISTEN rtm_jobs, rtm_jobs_cancel: %w", err)
	}
	w.listening.Store(true)
	// Jobs inserted while we were not listening sent their notification
	// to nobody: look once.
	w.signal()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return fmt.Errorf("wait for job notification: %w", err)
		}
		switch {
		case n.Payload != w.cfg.HostID:
		case n.Channel == "rtm_jobs_cancel":
			select {
			case w.renewNow <- struct{}{}:
			default:
			}
		default:
			w.wakeups.Add(1)
			w.jobArrived()
		}
	}
}
