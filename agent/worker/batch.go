package worker

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/galaxy/rtmanager/internal/db"
)

const (
	// maxFinishBatch bounds the jobs finished in one transaction.
	maxFinishBatch = 256
	// maxFinishLinger bounds how long the batch finisher waits for the
	// outcomes of jobs still running before it writes those it has.
	maxFinishLinger = time.Millisecond
	// finishWriters is how many batches may be written at once: while
	// one commits, the next is collected and written, so that a host
	// with many short jobs keeps both the database and the worker busy.
	// Batches written at once hold different jobs; their game locks,
	// taken in key order before any write, keep the events of a game in
	// commit order and the two from deadlocking.
	finishWriters = 2
)

// finishReq asks the batch finisher to record a final outcome without a
// record transition. res receives nil once the outcome has committed,
// db.ErrLeaseLost (wrapped) when the job was no longer ours, or the error
// of the write.
type finishReq struct {
	r *running
	o db.Outcome
	// keepSlot: the job has more to do after the commit (AfterCommit), so
	// its slot stays taken until its goroutine ends.
	keepSlot bool
	res      chan error
}

// finishBatched records o (which has no Record) through the batch
// finisher and waits for it to commit. The job keeps its slot until then,
// so a batch never holds more jobs than Concurrency, and a job counts as
// done only once its outcome is durable.
func (w *Worker) finishBatched(r *running, o db.Outcome, keepSlot bool) error {
	req := finishReq{r: r, o: o, keepSlot: keepSlot, res: make(chan error, 1)}
	w.finishQ <- req
	return <-req.res
}

// finishBatches is the batch finisher: it writes the waiting outcomes in
// one transaction (db.Store.FinishJobs: the games are locked in a fixed
// order before any write, each job is finished only under its lease, with
// one outcome event each).
//
// Once it has an outcome it waits, for at most maxFinishLinger, until
// every job in flight has handed in its outcome; it does not wait when
// there is no other job in flight, so a lone job gets no added latency.
// The outcomes that arrive while a batch is written make up the next one.
// Writing a batch frees its jobs' slots together, so that the claim loop
// refills them with one claim rather than one claim per job: claims and
// finishes both stay batched.
//
// It runs until ctx is done, which Run does only after every job
// goroutine has returned: no request is left unanswered.
func (w *Worker) finishBatches(ctx context.Context) {
	linger := time.NewTimer(maxFinishLinger)
	defer linger.Stop()
	writers := make(chan struct{}, finishWriters)
	// writing counts the jobs of the batches being written: their
	// outcomes are in, so the next batch does not wait for them.
	var writing atomic.Int64
	defer func() {
		for range finishWriters {
			writers <- struct{}{}
		}
	}()
	for {
		batch := make([]finishReq, 0, min(w.cfg.Concurrency, maxFinishBatch))
		select {
		case <-ctx.Done():
			return
		case req := <-w.finishQ:
			batch = append(batch, req)
		}
		linger.Reset(maxFinishLinger)
	collect:
		for len(batch) < maxFinishBatch {
			select {
			case req := <-w.finishQ:
				batch = append(batch, req)
				continue
			default:
			}
			if len(batch) >= w.inFlight()-int(writing.Load()) {
				break
			}
			select {
			case req := <-w.finishQ:
				batch = append(batch, req)
			case <-linger.C:
				break collect
			}
		}
		writers <- struct{}{}
		writing.Add(int64(len(batch)))
		go func() {
			defer func() { <-writers }()
			w.flush(batch)
			writing.Add(-int64(len(batch)))
		}()
	}
}

// inFlight is the count of jobs running (buffered ones have no outcome
// to hand in yet).
func (w *Worker) inFlight() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.active()
}

// flush writes one batch and answers each of its requests.
func (w *Worker) flush(batch []finishReq) {
	// A job is in a batch once: a second outcome of the same job (an
	// earlier attempt's goroutine that had not yet seen its lease go) is
	// written after the first, and finds the lease gone.
	var later []finishReq
	seen := make(map[int64]struct{}, len(batch))
	n := 0
	for _, req := range batch {
		if _, dup := seen[req.r.job.ID]; dup {
			later = append(later, req)
			continue
		}
		seen[req.r.job.ID] = struct{}{}
		batch[n] = req
		n++
	}
	batch = batch[:n]
	if len(later) > 0 {
		defer w.flush(later)
	}

	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	fs := make([]db.Finish, len(batch))
	for i, req := range batch {
		fs[i] = db.Finish{Job: req.r.job, Outcome: req.o}
	}
	done, err := w.store.FinishJobs(ctx, w.cfg.Owner, fs)
	if err != nil {
		if len(batch) > 1 && ctx.Err() == nil {
			// Nothing was written. Write the jobs one by one, so that a
			// job the batch cannot take does not hold up the others.
			w.log.Warn("finishing a batch of jobs failed; finishing them one by one", "jobs", len(batch), "err", err)
			for _, req := range batch {
				_, err := w.store.FinishJob(ctx, req.r.job, w.cfg.Owner, req.o)
				req.res <- err
			}
			return
		}
		for _, req := range batch {
			req.res <- err
		}
		return
	}
	w.mu.Lock()
	for _, req := range batch {
		if _, ok := done[req.r.job.ID]; ok && !req.keepSlot {
			w.vacate(req.r)
		}
	}
	w.dispatch()
	wake := w.wantClaim()
	w.mu.Unlock()
	if wake {
		w.signal()
	}
	for _, req := range batch {
		if _, ok := done[req.r.job.ID]; ok {
			req.res <- nil
		} else {
			req.res <- fmt.Errorf("finish job %d: %w", req.r.job.ID, db.ErrLeaseLost)
		}
	}
}
