package nofight_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/galaxy/rtmanager/agent/engine"
	"github.com/galaxy/rtmanager/agent/executor"
	"github.com/galaxy/rtmanager/agent/intent"
	"github.com/galaxy/rtmanager/agent/reconcile"
	"github.com/galaxy/rtmanager/agent/sweeper"
	"github.com/galaxy/rtmanager/agent/watcher"
	"github.com/galaxy/rtmanager/agent/worker"
	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/domain/job"
	"github.com/galaxy/rtmanager/internal/domain/outbox"
	"github.com/galaxy/rtmanager/internal/testutil/dockertest"
	"github.com/galaxy/rtmanager/internal/testutil/pgtest"
	"github.com/galaxy/rtmanager/internal/testutil/wait"
)

// agentOptions select the parts of a test agent.
type agentOptions struct {
	// ReconcileInterval of the reconciler's periodic passes.
	ReconcileInterval time.Duration
	// Sweep runs the cleanup sweeper every second on games stopped for a
	// millisecond.
	Sweep bool
	// Wrap, when set, wraps the real executor.
	Wrap func(worker.Executor) worker.Executor
	// WorkerOnly runs the job worker alone: no watcher, no reconciler.
	WorkerOnly bool
	// NoWorker runs no job worker.
	NoWorker bool
}

// host is one test's Docker host: its host id, database and engine.
type host struct {
	t      *testing.T
	ctx    context.Context
	hostID string
	// suffix makes game ids unique on the shared daemon (container names
	// are global).
	suffix string
	store  *db.Store
	eng    *engine.Docker
	image  string
	root   string
	policy job.Policy
}

func newHost(t *testing.T) *host {
	t.Helper()
	ctx := context.Background()
	hostID := dockertest.UniqueName(t)
	h := &host{t: t, ctx: ctx, hostID: hostID, suffix: hostID[strings.LastIndex(hostID, "-")+1:],
		eng: dockertest.Engine(t, hostID), image: dockertest.EngineImage(t), root: t.TempDir()}
	pool, err := db.Connect(ctx, pgtest.URL(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	h.store = db.NewStore(pool, nil)
	if _, err := h.store.RegisterHost(ctx, hostID, "agent-"+hostID, "test"); err != nil {
		t.Fatal(err)
	}
	h.policy = job.DefaultPolicy()
	h.policy.StateRoot = h.root
	h.policy.AllowedImages = []string{dockertest.ImageRepo}
	h.policy.DefaultLimits.MemoryBytes = 64 << 20
	h.policy.DefaultStopTimeout = 5 * time.Second
	return h
}

// agent is every writer of one host's records (or the ones the options
// select), run in the test process on the real daemon, with a fresh
// in-memory state, as a new agent process has.
type agent struct {
	*host
	rec   *reconcile.Reconciler
	watch *watcher.Watcher
	// stop stops the agent's parts and waits for them (also at cleanup).
	stop func()
}

func startAgent(t *testing.T, opts agentOptions) *agent {
	t.Helper()
	return newHost(t).start(opts)
}

func (h *host) start(opts agentOptions) *agent {
	t := h.t
	t.Helper()
	a := &agent{host: h}
	intents := intent.New(time.Minute, nil)
	var exec worker.Executor = executor.New(h.eng, executor.Config{Records: h.store, StateRoot: h.root})
	if opts.Wrap != nil {
		exec = opts.Wrap(exec)
	}
	work := worker.New(h.store, exec, worker.Config{
		HostID: h.hostID, Owner: fmt.Sprintf("agent-%s-%d", h.hostID, time.Now().UnixNano()), Concurrency: 4, LeaseDuration: 10 * time.Second,
		PollInterval: 50 * time.Millisecond, UseListen: true, Policy: h.policy, Network: "net-" + h.hostID,
		RetryBaseDelay: 10 * time.Millisecond, RetryMaxDelay: 100 * time.Millisecond, DrainTimeout: 100 * time.Millisecond,
	})
	var runs []func(context.Context) error
	if !opts.NoWorker {
		runs = append(runs, work.Run)
	}
	if !opts.WorkerOnly {
		a.rec = reconcile.New(h.store, h.eng, reconcile.Config{HostID: h.hostID, Interval: opts.ReconcileInterval, OrphanGrace: time.Hour, Intents: intents})
		a.watch = watcher.New(h.store, h.eng, a.rec, intents, watcher.Config{HostID: h.hostID})
		runs = append(runs, a.rec.Run, a.watch.Run)
	}
	if opts.Sweep {
		sweep, err := sweeper.New(h.store, h.eng, intents, sweeper.Config{HostID: h.hostID, Schedule: "@every 1s", StoppedTTL: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		runs = append(runs, sweep.Run)
	}
	runCtx, cancel := context.WithCancel(h.ctx)
	var wg sync.WaitGroup
	for _, run := range runs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := run(runCtx); err != nil {
				t.Errorf("a part stopped with an error: %v", err)
			}
		}()
	}
	var once sync.Once
	a.stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(a.stop)
	if a.watch != nil {
		wait.For(t, time.Minute, "the events stream", a.watch.Connected)
	}
	return a
}

// insert enqueues a job as the Game Master does and returns its id.
func (a *host) insert(gameID string, kind job.Kind, payload string) int64 {
	a.t.Helper()
	j, _, err := a.store.InsertJob(a.ctx, db.NewJob{HostID: a.hostID, GameID: gameID, Kind: kind, Payload: []byte(payload)})
	if err != nil {
		a.t.Fatal(err)
	}
	return j.ID
}

// waitSucceeded waits until every job has finished and fails the test for
// each one that did not succeed.
func (a *host) waitSucceeded(timeout time.Duration, ids []int64) map[int64]db.Job {
	a.t.Helper()
	jobs := map[int64]db.Job{}
	wait.For(a.t, timeout, fmt.Sprintf("%d jobs to finish", len(ids)), func() bool {
		for _, id := range ids {
			if j, ok := jobs[id]; ok && j.Status.IsFinal() {
				continue
			}
			j, err := a.store.GetJob(a.ctx, id)
			if err != nil || !j.Status.IsFinal() {
				return false
			}
			jobs[id] = j
		}
		return true
	})
	for _, id := range ids {
		if j := jobs[id]; j.Status != job.StatusSucceeded {
			a.t.Errorf("job %d (%s of %s) %s: %s", id, j.Kind, j.GameID, j.Status, j.LastError)
		}
	}
	return jobs
}

// event is an outbox row with its runtime payload decoded (zero for other
// types).
type event struct {
	db.StoredEvent
	rt outbox.RuntimePayload
}

// events returns the whole outbox in (xid, id) order, by game.
func (a *host) events() map[string][]event {
	a.t.Helper()
	evs, err := a.store.ReadOutbox(a.ctx, db.Position{}, 100_000)
	if err != nil {
		a.t.Fatal(err)
	}
	out := map[string][]event{}
	for _, ev := range evs {
		e := event{StoredEvent: ev}
		switch ev.Type {
		case outbox.TypeRuntimeRunning, outbox.TypeRuntimeStopped, outbox.TypeRuntimeRemoved:
			if err := json.Unmarshal(ev.Payload, &e.rt); err != nil {
				a.t.Fatal(err)
			}
		}
		out[ev.GameID] = append(out[ev.GameID], e)
	}
	return out
}

// String is the event as the failure messages show it.
func (e event) String() string {
	if e.rt.ToStatus == "" {
		return fmt.Sprintf("%s(job %d)", e.Type, e.JobID)
	}
	s := fmt.Sprintf("%s->%s(%s", e.rt.FromStatus, e.rt.ToStatus, e.rt.Reason)
	if e.rt.JobID != nil {
		s += fmt.Sprintf(" job %d", *e.rt.JobID)
	}
	if e.rt.ExitCode != nil {
		s += fmt.Sprintf(" exit %d", *e.rt.ExitCode)
	}
	return s + ")"
}
