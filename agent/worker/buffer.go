package worker

import (
	"context"
	"slices"
)

// The local buffer: a claim may take more jobs than there are free slots
// (Config.Prefetch); the extra ones wait in w.buf, claimed and leased,
// until a slot frees. Per-game order needs nothing more: a claim takes only
// the job at the head of its game's line, and a buffered job is running in
// the table, so it holds back its game's later jobs until it ends.

// active is the count of jobs started and not yet vacated: the slots
// taken. The caller holds w.mu.
func (w *Worker) active() int { return len(w.inflight) - len(w.buf) }

// dispatch starts buffered jobs, oldest claim first, while slots are free.
// The caller holds w.mu.
func (w *Worker) dispatch() {
	n := 0
	for !w.draining && n < len(w.buf) && w.active()+n < w.cfg.Concurrency {
		n++
	}
	if n == 0 {
		return
	}
	started := slices.Clone(w.buf[:n])
	w.buf = slices.Delete(w.buf, 0, n)
	for _, r := range started {
		w.launch(r)
	}
}

// unbuffer takes r out of the buffer, if it is there, and starts it at
// once outside the slots: its context is already cancelled (its cancel was
// requested or its lease lost), so it ends without running (see runJob).
// The caller holds w.mu.
func (w *Worker) unbuffer(r *running) {
	i := slices.Index(w.buf, r)
	if i < 0 || w.draining {
		return
	}
	w.buf = slices.Delete(w.buf, i, i+1)
	w.launch(r)
}

// launch runs r on a goroutine of its own. The caller holds w.mu.
func (w *Worker) launch(r *running) {
	w.wg.Add(1)
	go func() {
		defer func() {
			r.cancel(nil)
			w.mu.Lock()
			freed := w.vacate(r)
			w.dispatch()
			wake := freed && w.wantClaim()
			w.mu.Unlock()
			w.wg.Done()
			// A slot is free, and the game's next job may now be due.
			// Not when the batch finisher freed it: it woke the loop
			// already, and a second wake-up would be a claim that finds
			// nothing, one that a new job's wake-up must then wait for.
			if wake {
				w.signal()
			}
		}()
		w.runJob(r)
	}()
}

// wantClaim reports whether a claim could take jobs now: the buffer is at
// or below half its size, so the claim loop is woken when a slot frees
// only once a claim is worth a round trip (with Prefetch 0, whenever a
// slot frees). The caller holds w.mu.
func (w *Worker) wantClaim() bool { return len(w.buf) <= w.cfg.Prefetch/2 }

// reserve is how many jobs a claim asks for, now taken from the free
// slots (and the buffer) until start gives them back: enough to fill what
// no other claim in flight has asked for, or none while the buffer is
// more than half full. keep leaves up to that many (at most half) to a
// side claim; most, when above 0, caps the ask. Two claims in flight so
// never ask for more than there is room for: with Prefetch 0 every job
// claimed starts at once.
func (w *Worker) reserve(keep, most int) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.wantClaim() {
		return 0
	}
	n := max(w.cfg.Concurrency+w.cfg.Prefetch-len(w.inflight)-w.reserved, 0)
	n -= min(n/2, keep)
	if most > 0 {
		n = min(n, most)
	}
	w.reserved += n
	return n
}

// releaseBuffered gives the jobs still waiting in the buffer back to the
// queue at shutdown (ReleaseJob: due at once, attempt not counted): they
// never started. Dispatch starts nothing more afterwards.
func (w *Worker) releaseBuffered() {
	w.mu.Lock()
	w.draining = true
	rs := w.buf
	w.buf = nil
	w.mu.Unlock()
	for _, r := range rs {
		r.finishing.Store(true)
		ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
		_, err := w.store.ReleaseJob(ctx, r.job, w.cfg.Owner)
		cancel()
		if err != nil {
			w.writeFailed(r, "release a buffered job at shutdown", err)
		} else {
			w.released.Add(1)
			w.log.Info("buffered job released to the queue at shutdown", "job_id", r.job.ID, "game_id", r.job.GameID)
		}
		r.cancel(errDraining)
		r.span.End()
		w.mu.Lock()
		w.vacate(r)
		w.mu.Unlock()
	}
}
