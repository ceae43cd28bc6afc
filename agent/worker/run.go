package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/otel/codes"

	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/domain/job"
	"github.com/galaxy/rtmanager/internal/domain/runtime"
	"github.com/galaxy/rtmanager/internal/retry"
)

// maxErrorBytes bounds the error stored on a job: executor errors can quote
// daemon output, and the column is read by people.
const maxErrorBytes = 4 << 10

// writeTimeout bounds each outcome write. Outcome writes do not use the
// job's context (it may be the reason for the write) nor Run's (the drain
// still writes after it ended).
const writeTimeout = 30 * time.Second

// runJob runs one claimed job to an outcome: succeeded, failed, cancelled,
// retried later, released, or dropped because its lease was lost.
func (w *Worker) runJob(r *running) {
	j := r.job
	r.logh.Reset(w.log.Handler(), r)
	log := slog.New(&r.logh)
	began := time.Now()
	kind := kindAttr(j.Kind)
	defer func() {
		w.metrics.duration(kind, time.Since(began))
		r.span.End()
	}()

	if j.CancelRequestedAt != nil {
		// Cancelled while queued (or between attempts): it never runs.
		w.finish(r, log, db.Outcome{Status: job.StatusCancelled}, nil)
		return
	}
	switch cause := context.Cause(r.ctx); {
	case errors.Is(cause, errLeaseLost):
		// Lost while it waited in the buffer: someone else may hold it.
		log.Warn("buffered job dropped: lease lost before it started")
		return
	case errors.Is(cause, errCancelRequested):
		// Its cancel came while it waited in the buffer: it never runs.
		w.finish(r, log, db.Outcome{Status: job.StatusCancelled, Error: "cancelled before it started"}, nil)
		return
	}
	maxAttempts := w.maxAttempts(j)
	if j.Attempt > maxAttempts {
		// Only a requeued lease gets here: an agent died during each of
		// the job's attempts. Failing it stops a job that kills its agent
		// from doing so forever.
		msg := fmt.Sprintf("out of attempts (%d of %d): the agent stopped while running it; last error: %s", j.Attempt-1, maxAttempts, j.LastError)
		w.finish(r, log, db.Outcome{Status: job.StatusFailed, Error: truncate(msg)}, nil)
		return
	}
	spec, err := job.Decode(j.Kind, j.GameID, j.Payload, w.cfg.Policy)
	if err != nil {
		w.failOrRetry(r, log, fmt.Errorf("validate job: %w", err), maxAttempts, Result{})
		return
	}

	res, err := w.execute(r.ctx, Task{Job: j, Spec: spec, HostID: w.cfg.HostID, Network: w.cfg.Network})
	if err != nil {
		r.span.RecordError(err)
		r.span.SetStatus(codes.Error, err.Error())
	}
	cause := context.Cause(r.ctx)
	switch {
	case errors.Is(cause, errLeaseLost):
		// Someone else may hold the job now: write nothing.
		log.Warn("job interrupted: lease lost", "err", err)
		return
	case err == nil:
		out := db.Outcome{Status: job.StatusSucceeded, Record: res.Record, Check: res.Check, ImageDigest: res.ImageDigest}
		if !w.finish(r, log, out, res.AfterCommit) && r.lastFinishErr != nil && !r.lost() {
			// The record transition was refused: the world changed
			// under the job (say, the record was removed meanwhile).
			// finish has already logged it; nothing is written, so the
			// job is failed or retried like any other error. (Any other
			// failure to finish, a lost lease included, was dealt with
			// by finish: there is nothing to fail or retry.)
			w.failOrRetry(r, log, job.Permanent(r.lastFinishErr), maxAttempts, Result{})
		}
	case errors.Is(cause, errCancelRequested):
		w.endWith(r, log, db.Outcome{Status: job.StatusCancelled, Error: truncate("cancelled while running: " + err.Error())}, res)
	case errors.Is(cause, errDraining):
		w.release(r, log, err)
	default:
		w.failOrRetry(r, log, err, maxAttempts, res)
	}
}

// endWith records the end o (failed or cancelled) of a job that did not
// succeed, with the record change res carries, if any, and its Check and
// AfterCommit: an engine the job started runs whatever the job's end (one
// not ready, one whose readiness wait was cancelled; see Result.Record).
// Should the change be refused, the end is recorded without it.
func (w *Worker) endWith(r *running, log *slog.Logger, o db.Outcome, res Result) {
	if res.Record != nil || res.Check != nil {
		with := o
		with.Record, with.Check = res.Record, res.Check
		if w.finish(r, log, with, res.AfterCommit) || r.lastFinishErr == nil || r.lost() {
			return
		}
	}
	w.finish(r, log, o, nil)
}

// execute calls the executor and turns a panic into an error, so one bad
// job cannot take the agent (and every other job's lease) down.
func (w *Worker) execute(ctx context.Context, t Task) (res Result, err error) {
	defer func() {
		if p := recover(); p != nil {
			w.log.Error("executor panicked", "job_id", t.Job.ID, "panic", p, "stack", string(debug.Stack()))
			err = fmt.Errorf("executor panicked: %v", p)
		}
	}()
	return w.exec.Execute(ctx, t)
}

// failOrRetry fails the job for good when err is permanent or the attempts
// are used up (see endWith), and requeues it with backoff otherwise.
func (w *Worker) failOrRetry(r *running, log *slog.Logger, err error, maxAttempts int, res Result) {
	j := r.job
	msg := truncate(err.Error())
	if job.IsPermanent(err) || j.Attempt >= maxAttempts {
		if !job.IsPermanent(err) {
			msg = truncate(fmt.Sprintf("attempt %d of %d: %s", j.Attempt, maxAttempts, err))
		}
		w.endWith(r, log, db.Outcome{Status: job.StatusFailed, Error: msg}, res)
		return
	}
	delay := retry.Nth(w.cfg.RetryBaseDelay, w.cfg.RetryMaxDelay, j.Attempt)
	r.finishing.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	ctx, span := w.commitSpan(ctx, r, "retry")
	_, rerr := w.store.RetryJob(ctx, j, w.cfg.Owner, delay, msg)
	endSpan(span, rerr)
	if rerr != nil {
		w.writeFailed(r, "requeue for retry", rerr)
		return
	}
	w.retried.Add(1)
	w.metrics.outcome(kindAttr(j.Kind), "retried")
	log.Warn("job attempt failed; retrying", "retry_in", delay, "max_attempts", maxAttempts, "err", err)
	// No notification comes when the retry becomes due: the claim that
	// follows this job's end sees its new run_after and arms the timer.
}

// finish records a final outcome and reports whether it committed. On a
// committed success it runs after. A refused record transition is kept in
// r.lastFinishErr for the caller.
func (w *Worker) finish(r *running, log *slog.Logger, o db.Outcome, after func(context.Context) error) bool {
	j := r.job
	r.finishing.Store(true)
	ctx, span := w.commitSpan(context.Background(), r, string(o.Status))
	var err error
	if o.Record == nil && o.Check == nil && !w.unbatched {
		// Most outcomes: batched with those of other jobs (the batch's
		// write has its own timeout).
		err = w.finishBatched(r, o, after != nil)
	} else {
		wctx, cancel := context.WithTimeout(ctx, writeTimeout)
		_, err = w.store.FinishJob(wctx, j, w.cfg.Owner, o)
		cancel()
	}
	endSpan(span, err)
	if err != nil {
		if o.Record != nil && !errors.Is(err, db.ErrLeaseLost) && isDecisionError(err) {
			r.lastFinishErr = fmt.Errorf("record the outcome: %w", err)
			r.finishing.Store(false)
			log.Warn("job's record transition refused", "err", err)
			return false
		}
		w.writeFailed(r, "record the "+string(o.Status)+" outcome", err)
		return false
	}
	kind := kindAttr(j.Kind)
	switch o.Status {
	case job.StatusSucceeded:
		w.succeeded.Add(1)
		log.Info("job succeeded")
	case job.StatusFailed:
		w.failed.Add(1)
		log.Warn("job failed", "err", o.Error)
	case job.StatusCancelled:
		w.cancelled.Add(1)
		log.Info("job cancelled")
	}
	w.metrics.outcome(kind, string(o.Status))
	if after != nil {
		ctx, cancel := context.WithTimeout(ctx, writeTimeout)
		defer cancel()
		if err := after(ctx); err != nil {
			log.Warn("clean-up after the job's commit failed; the reconciler or the sweeper will finish it", "err", err)
		}
	}
	return true
}

// release gives an interrupted job back to the queue at shutdown.
func (w *Worker) release(r *running, log *slog.Logger, err error) {
	r.finishing.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	if _, rerr := w.store.ReleaseJob(ctx, r.job, w.cfg.Owner); rerr != nil {
		w.writeFailed(r, "release at shutdown", rerr)
		return
	}
	w.released.Add(1)
	log.Warn("job interrupted by shutdown; released to the queue", "err", err)
}

// writeFailed logs an outcome that could not be written. The job stays
// running under our lease, which is no longer renewed once the job is gone
// from the in-flight set: it expires and the job runs again, which the
// idempotent operations make safe.
func (w *Worker) writeFailed(r *running, what string, err error) {
	if errors.Is(err, db.ErrLeaseLost) {
		w.leaseLost.Add(1)
		w.log.Warn("job's lease was lost before its outcome was written; dropping it", "job_id", r.job.ID, "game_id", r.job.GameID, "what", what)
		return
	}
	w.log.Error("could not write the job's outcome; it will run again when its lease expires",
		"job_id", r.job.ID, "game_id", r.job.GameID, "what", what, "err", err)
	w.rescueSoon()
}

// isDecisionError tells a refused record transition (the decision's own
// error, which FinishJob returns as it is) from a database error. A refused
// transition means the world changed under the job in a way a retry of the
// same job cannot fix, so the job fails for good.
func isDecisionError(err error) bool {
	for _, sentinel := range []error{runtime.ErrRemoved, runtime.ErrInvalidTransition, runtime.ErrStaleContainer, runtime.ErrNotFound} {
		if errors.Is(err, sentinel) {
			return true
		}
	}
	return job.IsPermanent(err)
}

func (w *Worker) maxAttempts(j db.Job) int {
	if j.MaxAttempts > 0 {
		return j.MaxAttempts
	}
	return max(w.cfg.MaxAttempts(job.Kind(j.Kind)), 1)
}

func (r *running) lost() bool { return errors.Is(context.Cause(r.ctx), errLeaseLost) }

// truncate makes an error message one a job can store: executor errors
// quote daemon output, which may hold NUL bytes or invalid UTF-8 that
// PostgreSQL's text and jsonb refuse (the outcome's write would fail, and
// the job run again until it ran out of attempts), and may be long. It
// cuts at a character's start.
func truncate(s string) string {
	s = strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
	if len(s) <= maxErrorBytes {
		return s
	}
	cut := maxErrorBytes
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "… (truncated)"
}

// kindAttr keeps metric cardinality bounded: the kind column is written by
// another service and could hold anything.
func kindAttr(k string) string {
	if job.Kind(k).IsKnown() {
		return k
	}
	return "unknown"
}
