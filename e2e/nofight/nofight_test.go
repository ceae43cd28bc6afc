// Package nofight runs every writer of runtime records at once — the job
// worker, the events watcher, the reconciler and the cleanup sweeper, the
// last two on very short periods — through a churn of lifecycle jobs on
// real Docker and PostgreSQL, and checks from the outbox that they never
// fight: no repair of a record that was right, no orphan report of a
// container a job was creating, every change attributable to a job.
package nofight_test

import (
	"context"
	"encoding/json"
	"fmt"
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
	"github.com/galaxy/rtmanager/internal/domain/runtime"
	"github.com/galaxy/rtmanager/internal/testutil/dockertest"
	"github.com/galaxy/rtmanager/internal/testutil/pgtest"
	"github.com/galaxy/rtmanager/internal/testutil/wait"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestWritersNeverFight(t *testing.T) {
	ctx := context.Background()
	hostID := dockertest.UniqueName(t)
	eng := dockertest.Engine(t, hostID)
	image := dockertest.EngineImage(t)
	pool, err := db.Connect(ctx, pgtest.URL(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	store := db.NewStore(pool, nil)
	if _, err := store.RegisterHost(ctx, hostID, "agent-"+hostID, "test"); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	policy := job.DefaultPolicy()
	policy.StateRoot = root
	policy.AllowedImages = []string{dockertest.ImageRepo}
	policy.DefaultLimits.MemoryBytes = 64 << 20
	policy.DefaultStopTimeout = 5 * time.Second
	intents := intent.New(time.Minute, nil)

	rec := reconcile.New(store, eng, reconcile.Config{HostID: hostID, Interval: 20 * time.Millisecond, OrphanGrace: time.Hour, Intents: intents})
	watch := watcher.New(store, eng, rec, intents, watcher.Config{HostID: hostID})
	work := worker.New(store, executor.New(eng, executor.Config{Records: store, StateRoot: root}), intents, worker.Config{
		HostID: hostID, Owner: "agent-" + hostID, Concurrency: 4, LeaseDuration: 10 * time.Second,
		PollInterval: 50 * time.Millisecond, UseListen: true, Policy: policy, Network: "net-" + hostID,
		RetryBaseDelay: 10 * time.Millisecond, RetryMaxDelay: 100 * time.Millisecond,
	})
	// Stopped games become due for cleanup at once: the sweeper runs every
	// second and must keep its hands off every game with a job to come.
	sweep, err := sweeper.New(store, eng, intents, sweeper.Config{HostID: hostID, Schedule: "@every 1s", StoppedTTL: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, run := range []func(context.Context) error{rec.Run, watch.Run, work.Run, sweep.Run} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := run(runCtx); err != nil {
				t.Errorf("a part stopped with an error: %v", err)
			}
		}()
	}
	t.Cleanup(func() { stop(); wg.Wait() })
	wait.For(t, time.Minute, "the events stream", watch.Connected)

	// Every game runs the same script; the jobs of all games interleave.
	const games = 8
	script := []struct{ kind, payload string }{
		{"start", fmt.Sprintf(`{"image_ref": %q}`, image)},
		{"stop", `{"timeout_seconds": 5}`},
		{"start", fmt.Sprintf(`{"image_ref": %q}`, image)},
		{"restart", `{"timeout_seconds": 5}`},
		{"stop", `{"timeout_seconds": 5}`},
	}
	var ids []int64
	for step := range script {
		for g := 0; g < games; g++ {
			j, _, err := store.InsertJob(ctx, db.NewJob{
				HostID: hostID, GameID: fmt.Sprintf("g%d", g), Kind: job.Kind(script[step].kind), Payload: []byte(script[step].payload),
			})
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, j.ID)
		}
	}
	wait.For(t, 4*time.Minute, "every job to finish", func() bool {
		for _, id := range ids {
			j, err := store.GetJob(ctx, id)
			if err != nil || !j.Status.IsFinal() {
				return false
			}
		}
		return true
	})
	for _, id := range ids {
		if j, _ := store.GetJob(ctx, id); j.Status != job.StatusSucceeded {
			t.Errorf("job %d (%s of %s) %s: %s", id, j.Kind, j.GameID, j.Status, j.LastError)
		}
	}
	// The sweeper removes the games once their last job is done; the
	// reconciler, every 20 ms, passes over the settled state dozens of
	// times meanwhile.
	wait.For(t, time.Minute, "every stopped game swept", func() bool {
		recs, err := store.ListRecords(ctx, hostID, runtime.StatusStopped)
		return err == nil && len(recs) == 0
	})

	evs, err := store.ReadOutbox(ctx, db.Position{}, 100_000)
	if err != nil {
		t.Fatal(err)
	}
	perGame := map[string][]string{}
	for _, ev := range evs {
		switch ev.Type {
		case outbox.TypeContainerOrphaned:
			t.Errorf("orphan reported while only jobs changed the host: %s", ev.Payload)
		case outbox.TypeRuntimeRunning, outbox.TypeRuntimeStopped, outbox.TypeRuntimeRemoved:
			var p outbox.RuntimePayload
			if err := json.Unmarshal(ev.Payload, &p); err != nil {
				t.Fatal(err)
			}
			perGame[ev.GameID] = append(perGame[ev.GameID], fmt.Sprintf("%s(%s)", p.ToStatus, p.Reason))
			switch p.Reason {
			case outbox.ReasonReconcileExit, outbox.ReasonReconcileStart, outbox.ReasonReconcileDispose:
				t.Errorf("game %s: the reconciler repaired a record nothing had broken: %s", ev.GameID, ev.Payload)
			case outbox.ReasonObservedDie, outbox.ReasonObservedStart, outbox.ReasonObservedDestroy:
				if !p.RequestedByJob {
					t.Errorf("game %s: a change no job asked for: %s", ev.GameID, ev.Payload)
				}
			}
		}
	}
	for g := 0; g < games; g++ {
		id := fmt.Sprintf("g%d", g)
		seq := perGame[id]
		if len(seq) == 0 || seq[len(seq)-1] != "removed(cleanup)" {
			t.Errorf("game %s: events %v; want the script's changes, then removed(cleanup)", id, seq)
		}
		t.Logf("game %s: %v", id, seq)
	}
	if n := countContainers(t, eng); n != 0 {
		t.Errorf("%d containers left after the sweep", n)
	}
}

func countContainers(t *testing.T, eng *engine.Docker) int {
	t.Helper()
	cs, err := eng.ListManaged(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return len(cs)
}
