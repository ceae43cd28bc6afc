// Package worker runs the lifecycle jobs of one host from the PostgreSQL
// job table: it claims them (FOR UPDATE SKIP LOCKED, per-game FIFO), holds
// a lease on each while it runs and renews it, retries failures with
// exponential backoff and jitter, honours cancel requests, and records
// every outcome (with the record's transition and the outbox event) in
// one transaction. Outcomes without a record transition are written in
// batches, several jobs to a transaction (see batch.go); each job still
// gets its final state and its one outcome event together, under its lease.
//
// Delivery is at least once: a job whose agent died is requeued once its
// lease expires and runs again, so the Executor's operations must be
// idempotent. The lease is what keeps a job from running on two agents at
// once: an agent that cannot renew a lease in time interrupts the job
// before the lease can expire and be claimed by someone else.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/galaxy/rtmanager/agent/telemetry"
	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/domain/job"
)

// Task is one attempt of a validated job, as an Executor sees it.
type Task struct {
	// Job is the claimed row (Attempt counts this attempt).
	Job db.Job
	// Spec is the job as job.Decode accepted it under the worker's policy.
	Spec job.Spec
	// HostID and Network are the worker's: where the engine runs and the
	// Docker network it joins. They come from the worker's configuration
	// so that the agent has one source of truth for them.
	HostID  string
	Network string
}

// Result is what a successful (or partly successful) attempt produced.
type Result struct {
	// Record is the record transition the work caused; the worker commits
	// it with the job's final state, or nothing at all. Nil: no change.
	// Returned with an error, it commits (with Check and AfterCommit) only
	// if the job fails for good or is cancelled: an engine that started
	// but was not ready, or whose wait was cancelled, is running, and the
	// record says so beside the job's end. A retried or released job
	// drops it (the next attempt adopts the engine).
	Record db.Decision
	// Check, when set, is committed with the succeeded outcome (or with
	// a failure that commits Record), after it: a look at the container
	// at commit time (see db.Outcome.Check).
	Check db.ObservedDecision
	// AfterCommit, when set, runs once the succeeded outcome (and Record)
	// has committed. An image change removes the old container here: only
	// when the record names the new one is the old one's destroy event
	// stale for the watcher.
	AfterCommit func(ctx context.Context) error
	// ImageDigest is the registry digest of the image the job ran or
	// pulled, when known; it goes into the job.succeeded event.
	ImageDigest string
}

// Executor performs the work of one job attempt. An error is retried
// unless job.IsPermanent says otherwise; ctx is cancelled (with a cause
// the worker inspects) when the lease is lost, a cancel is requested, or
// the drain deadline passes.
type Executor interface {
	Execute(ctx context.Context, t Task) (Result, error)
}

// ExecutorFunc adapts a function to Executor.
type ExecutorFunc func(ctx context.Context, t Task) (Result, error)

// Execute implements Executor.
func (f ExecutorFunc) Execute(ctx context.Context, t Task) (Result, error) { return f(ctx, t) }

// Noop is an executor that does nothing and succeeds, for benchmarks of the
// queue itself.
var Noop Executor = ExecutorFunc(func(context.Context, Task) (Result, error) { return Result{}, nil })

// Config configures a Worker. Zero durations take the defaults noted.
type Config struct {
	// HostID is the host whose jobs this worker runs; required.
	HostID string
	// Owner names this agent process in lease_owner; required and unique
	// per process, so that a restarted agent does not mistake the leases
	// of its predecessor for its own.
	Owner string
	// Concurrency bounds the jobs run at once (default 4). Jobs of one
	// game never run at once whatever this is.
	Concurrency int
	// Prefetch is how many jobs beyond the free slots a claim may take and
	// hold in a local buffer until a slot frees (default 0: a claim takes
	// only what can start at once). Buffered jobs are claimed (running,
	// under this agent's lease, which is renewed with the others), start
	// in claim order, are cancelled without running when their cancel is
	// requested, and are released to the queue, attempt uncounted, on
	// shutdown. Worth it for short jobs, where it turns a claim per
	// finished batch into a claim per Prefetch/2 jobs; a job that runs
	// Docker for hundreds of milliseconds gains one round trip at most.
	Prefetch int
	// LeaseDuration is how long a claim is valid without renewal
	// (default 30s); LeaseRenewInterval how often it is renewed (default
	// a third of it). A dead agent's jobs rerun after at most
	// LeaseDuration plus RescueInterval.
	LeaseDuration, LeaseRenewInterval time.Duration
	// PollInterval is how often the queue is polled when no wake-up came
	// (default 1s; with UseListen it is only a safety net).
	PollInterval time.Duration
	// UseListen wakes the worker through LISTEN rtm_jobs when a job of
	// its host is inserted or a queued one's cancel is asked for. It needs
	// a session connection: set it false behind a transaction pooler such
	// as PgBouncer in transaction mode, and rely on polling. Either way a
	// job the worker has seen queued runs when it falls due (a timer), not
	// at the next poll.
	UseListen bool
	// Policy validates every job before it reaches the executor.
	Policy job.Policy
	// Network is the Docker network engines join; passed in Task.
	Network string
	// Logger defaults to slog.Default().
	Logger *slog.Logger

	// DrainTimeout bounds how long Run waits, once its context is done,
	// for running jobs to finish; then they are interrupted and released
	// to the queue without using up an attempt (default 30s).
	DrainTimeout time.Duration
	// RescueInterval is how often the host's expired leases are requeued
	// (default LeaseDuration). Run also does it once at start, which is
	// what brings a restarted agent's interrupted jobs back.
	RescueInterval time.Duration
	// RetryBaseDelay and RetryMaxDelay shape the backoff between attempts:
	// base·2^(attempt-1), capped at max, with jitter in its upper half
	// (defaults 1s and 5m).
	RetryBaseDelay, RetryMaxDelay time.Duration
	// MaxAttempts returns the attempts of a job whose max_attempts is 0
	// (default job.DefaultMaxAttempts).
	MaxAttempts func(job.Kind) int
}

func (c *Config) applyDefaults() error {
	if c.HostID == "" || c.Owner == "" {
		return errors.New("worker: HostID and Owner are required")
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 4
	}
	if c.Prefetch < 0 {
		c.Prefetch = 0
	}
	if c.LeaseDuration <= 0 {
		c.LeaseDuration = 30 * time.Second
	}
	if c.LeaseRenewInterval <= 0 {
		c.LeaseRenewInterval = c.LeaseDuration / 3
	}
	if c.LeaseRenewInterval >= c.LeaseDuration {
		return fmt.Errorf("worker: lease renew interval %s must be shorter than the lease %s", c.LeaseRenewInterval, c.LeaseDuration)
	}
	if c.PollInterval <= 0 {
		c.PollInterval = time.Second
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 30 * time.Second
	}
	if c.RescueInterval <= 0 {
		c.RescueInterval = c.LeaseDuration
	}
	if c.RetryBaseDelay <= 0 {
		c.RetryBaseDelay = time.Second
	}
	if c.RetryMaxDelay <= 0 {
		c.RetryMaxDelay = 5 * time.Minute
	}
	if c.MaxAttempts == nil {
		c.MaxAttempts = job.DefaultMaxAttempts
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Stats are counters since New, for tests and metrics.
type Stats struct {
	Claimed, Succeeded, Failed, Cancelled, Retried int64
	// Released: given back to the queue at shutdown.
	Released int64
	// LeaseLost: interrupted or dropped because the lease was no longer
	// ours.
	LeaseLost int64
	// Requeued: expired leases (of dead agents) this worker requeued.
	Requeued int64
	// Wakeups: notifications for this host received through LISTEN.
	Wakeups int64
}

// Causes of a job context's cancellation.
var (
	errLeaseLost       = errors.New("job lease lost")
	errCancelRequested = errors.New("job cancel requested")
	errDraining        = errors.New("agent shutting down: drain deadline passed")
)

// Worker claims and runs the jobs of one host. Create it with New.
type Worker struct {
	store   *db.Store
	exec    Executor
	cfg     Config
	cfgErr  error
	log     *slog.Logger
	metrics *metrics
	tracer  trace.Tracer

	wake chan struct{}
	// arrived asks for a side claim (see claimArrivals); claimBusy is set
	// while the claim loop's statement runs.
	arrived   chan struct{}
	claimBusy atomic.Bool
	// lastShort: the claim loop's last claim got fewer jobs than it asked
	// for, so the queue had run dry (claim loop only).
	lastShort bool
	// renewNow asks the lease renewal for a round at once: a cancel was
	// asked for a job this host's agent holds (rtm_jobs_cancel).
	renewNow chan struct{}
	// finishQ feeds the batch finisher (see batch.go).
	finishQ chan finishReq
	// unbatched makes every finish a transaction of its own, as before
	// the batch finisher: for benchmarks that compare the two.
	unbatched bool

	mu sync.Mutex
	// inflight holds every job claimed and not yet vacated: the running
	// ones and those waiting in buf. Leases are renewed for all of them.
	inflight map[int64]*running
	// buf holds claimed jobs not yet started, in claim order (see
	// buffer.go); draining stops dispatch from starting any more.
	buf      []*running
	draining bool
	// reserved is the slots asked for by claims in flight (see reserve).
	reserved int
	// wg counts the job goroutines (started jobs only).
	wg sync.WaitGroup

	claimed, succeeded, failed, cancelled, retried atomic.Int64
	released, leaseLost, requeued, wakeups         atomic.Int64
	listening                                      atomic.Bool
	// rescueDue (Unix nanoseconds, 0: none) asks the claim loop for an
	// early rescue: see rescueSoon.
	rescueDue atomic.Int64
	// rescueFailed says the last rescue could not run; rescueIfDue tries
	// it again. Only the claim loop's goroutine uses it.
	rescueFailed bool
}

// running is one job in flight.
type running struct {
	job    db.Job
	ctx    context.Context
	cancel context.CancelCauseFunc
	// span is the attempt's span; ctx carries it.
	span trace.Span
	// leaseUntil is a conservative local estimate of the lease's expiry:
	// taken from the time the renewal was sent, not when it returned.
	leaseUntil time.Time // guarded by Worker.mu
	finishing  atomic.Bool
	// lastFinishErr is the refused record transition of a success, for
	// runJob (same goroutine).
	lastFinishErr error
	// logh is the handler of the job's logger (runJob), here to save its
	// allocations.
	logh telemetry.DeferredHandler
}

// LogAttrs are the attributes of the records logged about the job
// (telemetry.AttrSource), made only when one is written: at thousands of
// jobs a second, making them for each job was a visible share of the
// worker's CPU, and most jobs log nothing at the usual level.
func (r *running) LogAttrs() []slog.Attr {
	return []slog.Attr{slog.Int64("job_id", r.job.ID), slog.String("game_id", r.job.GameID),
		slog.String("kind", r.job.Kind), slog.Int("attempt", r.job.Attempt), telemetry.TraceIDAttr(r.span.SpanContext().TraceID())}
}

// New returns a worker; Run starts it.
func New(store *db.Store, exec Executor, cfg Config) *Worker {
	err := cfg.applyDefaults()
	w := &Worker{
		store: store, exec: exec, cfg: cfg, cfgErr: err,
		log:      cfg.Logger,
		metrics:  newMetrics(),
		tracer:   newTracer(),
		wake:     make(chan struct{}, 1),
		arrived:  make(chan struct{}, 1),
		renewNow: make(chan struct{}, 1),
		inflight: map[int64]*running{},
	}
	if err == nil {
		w.finishQ = make(chan finishReq, cfg.Concurrency)
	}
	if w.log == nil {
		w.log = slog.Default()
	}
	return w
}

// Stats returns the counters.
func (w *Worker) Stats() Stats {
	return Stats{
		Claimed: w.claimed.Load(), Succeeded: w.succeeded.Load(), Failed: w.failed.Load(),
		Cancelled: w.cancelled.Load(), Retried: w.retried.Load(), Released: w.released.Load(),
		LeaseLost: w.leaseLost.Load(), Requeued: w.requeued.Load(), Wakeups: w.wakeups.Load(),
	}
}

// Listening reports whether the LISTEN connection is up, so that callers
// (health checks, tests) know wake-ups arrive without polling.
func (w *Worker) Listening() bool { return w.listening.Load() }

// signal wakes the claim loop; it never blocks.
func (w *Worker) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Run claims and runs jobs until ctx is done, then drains: it stops
// claiming, lets running jobs finish for up to DrainTimeout, interrupts
// and releases the rest, and returns nil. It returns an error only for a
// configuration it cannot run with.
func (w *Worker) Run(ctx context.Context) error {
	if w.cfgErr != nil {
		return w.cfgErr
	}
	if w.exec == nil || w.store == nil {
		return errors.New("worker: store and executor are required")
	}
	cfg := w.cfg
	w.log.Info("job worker started", "host_id", cfg.HostID, "owner", cfg.Owner, "concurrency", cfg.Concurrency,
		"lease", cfg.LeaseDuration, "poll_interval", cfg.PollInterval, "listen", cfg.UseListen)

	// Leases and finishes outlive ctx: the drain needs them.
	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBG()
	var bgWG sync.WaitGroup
	bgWG.Add(1)
	go func() { defer bgWG.Done(); w.renewLeases(bg) }()
	bgWG.Add(1)
	go func() { defer bgWG.Done(); w.finishBatches(bg) }()
	if cfg.UseListen {
		bgWG.Add(1)
		go func() { defer bgWG.Done(); w.listen(ctx) }()
	}
	// Side claims start jobs: they end before the drain.
	var sideWG sync.WaitGroup
	sideWG.Add(1)
	go func() { defer sideWG.Done(); w.claimArrivals(ctx) }()

	w.rescueOrRetry(ctx)
	// An earlier term of this agent may have left jobs whose outcome it
	// could not write under leases that outlive the term (the agent id
	// stays; the worker does not), and a previous agent's may outlive its
	// host lease: the rescue just run found them unexpired.
	w.rescueSoon()
	poll := time.NewTicker(cfg.PollInterval)
	defer poll.Stop()
	rescue := time.NewTicker(cfg.RescueInterval)
	defer rescue.Stop()
	// due fires when the host's next job that is not yet due falls due;
	// every claim re-arms it (see claim).
	due := time.NewTimer(time.Hour)
	due.Stop()
	defer due.Stop()
	again := false
	for ctx.Err() == nil {
		w.rescueIfDue(ctx)
		if again = w.claim(ctx, due, again); again {
			continue
		}
		select {
		case <-ctx.Done():
		case <-w.wake:
		case <-poll.C:
		case <-due.C:
		case <-rescue.C:
			w.rescueOrRetry(ctx)
		}
	}

	sideWG.Wait()
	w.drain()
	stopBG()
	bgWG.Wait()
	w.log.Info("job worker stopped", "host_id", cfg.HostID, "owner", cfg.Owner)
	return nil
}

// start gives back a claim's reservation (see reserve), registers the jobs
// it claimed and queues them in the local buffer, from
// which dispatch starts as many as there are free slots, each on its own
// goroutine. All of them are in flight before any runs, so the batch
// finisher, which waits for the outcomes of the jobs running, sees the
// claim as a whole.
func (w *Worker) start(jobs []db.Job, reserved int, sent, claimed time.Time) {
	rs := make([]*running, len(jobs))
	var perKind map[string]int64
	for i, j := range jobs {
		w.claimed.Add(1)
		kind := kindAttr(j.Kind)
		if perKind == nil {
			perKind = make(map[string]int64, 2)
		}
		perKind[kind]++
		if j.StartedAt != nil {
			w.metrics.pickup(kind, j.StartedAt.Sub(j.RunAfter))
		}
		spanCtx, span := w.jobSpan(j, sent, claimed)
		ctx, cancel := context.WithCancelCause(spanCtx)
		rs[i] = &running{job: j, ctx: ctx, cancel: cancel, span: span, leaseUntil: sent.Add(w.cfg.LeaseDuration)}
	}
	for kind, n := range perKind {
		w.metrics.claimed(kind, n)
	}
	w.mu.Lock()
	// The claim's reservation becomes its jobs in one step, so that no
	// other claim sees the slots as free in between.
	w.reserved -= reserved
	for _, r := range rs {
		w.inflight[r.job.ID] = r
	}
	w.buf = append(w.buf, rs...)
	w.dispatch()
	w.mu.Unlock()
}

// vacate removes r from the in-flight set, freeing its slot, unless it is
// gone already (the batch finisher frees the slots of a batch together) or
// its id now belongs to a later claim of the same job. It reports whether
// it freed the slot. The caller holds w.mu.
func (w *Worker) vacate(r *running) bool {
	if w.inflight[r.job.ID] != r {
		return false
	}
	delete(w.inflight, r.job.ID)
	return true
}

// rescue requeues the host's jobs whose lease expired and reports whether
// it could.
func (w *Worker) rescue(ctx context.Context) bool {
	ids, err := w.store.RequeueExpiredLeases(ctx, w.cfg.HostID)
	if err != nil {
		if ctx.Err() == nil {
			w.log.Warn("requeueing expired leases failed", "host_id", w.cfg.HostID, "err", err)
		}
		return false
	}
	if len(ids) > 0 {
		w.requeued.Add(int64(len(ids)))
		w.log.Warn("requeued jobs whose lease expired (their agent stopped renewing)", "host_id", w.cfg.HostID, "job_ids", ids)
		w.signal()
	}
	return true
}

// rescueOrRetry runs the rescue and, when it fails, has rescueIfDue try
// it again every LeaseRenewInterval until it succeeds. Waiting for the
// next RescueInterval instead left the jobs of an agent that lost its
// database running under expired leases for that long: the rescue at the
// worker's start is the one that meets a database just back, and a
// connection terminated then failed it.
func (w *Worker) rescueOrRetry(ctx context.Context) {
	if w.rescue(ctx) || ctx.Err() != nil {
		w.rescueFailed = false
		return
	}
	w.rescueFailed = true
	time.AfterFunc(w.cfg.LeaseRenewInterval, w.signal)
}

// rescueSoon asks for a rescue once the lease of a job this worker gave
// up on has expired: a job whose outcome could not be written (the
// database was away, the connection was terminated) or whose lease could
// not be renewed stays running under an expired lease of this live agent,
// and the periodic rescue may be minutes away. The lease expires at most
// LeaseDuration from now; one more LeaseDuration allows for clock skew
// between the agent and the database.
func (w *Worker) rescueSoon() {
	due := time.Now().Add(2 * w.cfg.LeaseDuration).UnixNano()
	// A later time covers every lease an earlier one would.
	for {
		cur := w.rescueDue.Load()
		if cur >= due {
			return
		}
		if w.rescueDue.CompareAndSwap(cur, due) {
			time.AfterFunc(time.Until(time.Unix(0, due)), w.signal)
			return
		}
	}
}

// rescueIfDue runs the rescue rescueSoon asked for once it is due, or the
// one that failed last, and tries again a little later while the database
// cannot be reached.
func (w *Worker) rescueIfDue(ctx context.Context) {
	due := w.rescueDue.Load()
	isDue := due != 0 && time.Now().UnixNano() >= due
	if !isDue && !w.rescueFailed {
		return
	}
	w.rescueOrRetry(ctx)
	if isDue && !w.rescueFailed {
		w.rescueDue.CompareAndSwap(due, 0)
	}
}

// drain gives the buffered jobs back to the queue, waits for running
// jobs, then interrupts the rest so they release their leases.
func (w *Worker) drain() {
	w.releaseBuffered()
	done := make(chan struct{})
	go func() { w.wg.Wait(); close(done) }()
	timer := time.NewTimer(w.cfg.DrainTimeout)
	defer timer.Stop()
	select {
	case <-done:
		return
	case <-timer.C:
	}
	w.mu.Lock()
	n := len(w.inflight)
	for _, r := range w.inflight {
		r.cancel(errDraining)
	}
	w.mu.Unlock()
	w.log.Warn("drain deadline passed; interrupting running jobs and giving them back to the queue", "jobs", n)
	<-done
}

// renewLeases extends the leases of running jobs every LeaseRenewInterval
// (and at once when a cancel of a held job is notified) and interrupts
// jobs whose lease is lost, whose cancel was requested, or whose lease may
// have expired because renewals failed.
func (w *Worker) renewLeases(ctx context.Context) {
	tick := time.NewTicker(w.cfg.LeaseRenewInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-w.renewNow:
		}
		w.mu.Lock()
		ids := make([]int64, 0, len(w.inflight))
		for id, r := range w.inflight {
			if !r.finishing.Load() {
				ids = append(ids, id)
			}
		}
		w.mu.Unlock()
		if len(ids) == 0 {
			continue
		}
		sent := time.Now()
		held, err := w.store.ExtendLeases(ctx, w.cfg.Owner, ids, w.cfg.LeaseDuration)
		w.mu.Lock()
		for _, id := range ids {
			r, ok := w.inflight[id]
			if !ok || r.finishing.Load() {
				continue
			}
			switch cancelRequested, stillHeld := held[id]; {
			case err != nil:
				if time.Now().After(r.leaseUntil) {
					w.loseLease(r, fmt.Sprintf("could not renew the lease before it expired: %v", err))
				}
			case !stillHeld:
				w.loseLease(r, "the job is no longer running under this agent's lease")
			default:
				r.leaseUntil = sent.Add(w.cfg.LeaseDuration)
				if cancelRequested && context.Cause(r.ctx) == nil {
					w.log.Info("cancel requested for running job; interrupting it", "job_id", id, "game_id", r.job.GameID)
					r.cancel(errCancelRequested)
					// A buffered one need not wait for a slot to be
					// cancelled: it ends without running.
					w.unbuffer(r)
				}
			}
		}
		w.mu.Unlock()
		if err != nil && ctx.Err() == nil {
			w.log.Warn("renewing job leases failed", "owner", w.cfg.Owner, "jobs", len(ids), "err", err)
		}
	}
}

// loseLease interrupts a job whose lease is gone. The caller holds w.mu.
func (w *Worker) loseLease(r *running, why string) {
	if errors.Is(context.Cause(r.ctx), errLeaseLost) {
		return
	}
	w.leaseLost.Add(1)
	w.log.Warn("lost the lease of a running job; interrupting it", "job_id", r.job.ID, "game_id", r.job.GameID, "why", why)
	r.cancel(errLeaseLost)
	w.unbuffer(r)
	w.rescueSoon()
}
