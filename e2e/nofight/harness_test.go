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
}

// agent is every writer of one host's records, run in the test process on
// the real daemon and a database of its own.
type agent struct {
	t      *testing.T
	ctx    context.Context
	hostID string
	// suffix makes game ids unique on the shared daemon (container names
	// are global).
	suffix string
	store  *db.Store
	eng    *engine.Docker
	image  string
	watch  *watcher.Watcher
}

func startAgent(t *testing.T, opts agentOptions) *agent {
	t.Helper()
	ctx := context.Background()
	hostID := dockertest.UniqueName(t)
	a := &agent{t: t, ctx: ctx, hostID: hostID, suffix: hostID[strings.LastIndex(hostID, "-")+1:],
		eng: dockertest.Engine(t, hostID), image: dockertest.EngineImage(t)}
	pool, err := db.Connect(ctx, pgtest.URL(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	a.store = db.NewStore(pool, nil)
	if _, err := a.store.RegisterHost(ctx, hostID, "agent-"+hostID, "test"); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	policy := job.DefaultPolicy()
	policy.StateRoot = root
	policy.AllowedImages = []string{dockertest.ImageRepo}
	policy.DefaultLimits.MemoryBytes = 64 << 20
	policy.DefaultStopTimeout = 5 * time.Second
	intents := intent.New(time.Minute, nil)

	rec := reconcile.New(a.store, a.eng, reconcile.Config{HostID: hostID, Interval: opts.ReconcileInterval, OrphanGrace: time.Hour, Intents: intents})
	a.watch = watcher.New(a.store, a.eng, rec, intents, watcher.Config{HostID: hostID})
	var exec worker.Executor = executor.New(a.eng, executor.Config{Records: a.store, StateRoot: root})
	if opts.Wrap != nil {
		exec = opts.Wrap(exec)
	}
	work := worker.New(a.store, exec, intents, worker.Config{
		HostID: hostID, Owner: "agent-" + hostID, Concurrency: 4, LeaseDuration: 10 * time.Second,
		PollInterval: 50 * time.Millisecond, UseListen: true, Policy: policy, Network: "net-" + hostID,
		RetryBaseDelay: 10 * time.Millisecond, RetryMaxDelay: 100 * time.Millisecond,
	})
	runs := []func(context.Context) error{rec.Run, a.watch.Run, work.Run}
	if opts.Sweep {
		sweep, err := sweeper.New(a.store, a.eng, intents, sweeper.Config{HostID: hostID, Schedule: "@every 1s", StoppedTTL: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		runs = append(runs, sweep.Run)
	}
	runCtx, stop := context.WithCancel(ctx)
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
	t.Cleanup(func() { stop(); wg.Wait() })
	wait.For(t, time.Minute, "the events stream", a.watch.Connected)
	return a
}

// insert enqueues a job as the Game Master does and returns its id.
func (a *agent) insert(gameID string, kind job.Kind, payload string) int64 {
	a.t.Helper()
	j, _, err := a.store.InsertJob(a.ctx, db.NewJob{HostID: a.hostID, GameID: gameID, Kind: kind, Payload: []byte(payload)})
	if err != nil {
		a.t.Fatal(err)
	}
	return j.ID
}

// waitSucceeded waits until every job has finished and fails the test for
// each one that did not succeed.
func (a *agent) waitSucceeded(timeout time.Duration, ids []int64) map[int64]db.Job {
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
func (a *agent) events() map[string][]event {
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
