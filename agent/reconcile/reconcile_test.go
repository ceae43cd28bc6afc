package reconcile_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/galaxy/rtmanager/agent/engine"
	"github.com/galaxy/rtmanager/agent/intent"
	"github.com/galaxy/rtmanager/agent/reconcile"
	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/domain/job"
	"github.com/galaxy/rtmanager/internal/domain/outbox"
	"github.com/galaxy/rtmanager/internal/domain/runtime"
	"github.com/galaxy/rtmanager/internal/testutil/dockertest"
	"github.com/galaxy/rtmanager/internal/testutil/pgtest"
	"github.com/galaxy/rtmanager/internal/testutil/wait"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

type env struct {
	t      testing.TB
	ctx    context.Context
	hostID string
	store  *db.Store
	eng    *engine.Docker
	raw    *client.Client
	image  string
}

func newEnv(t testing.TB) *env {
	t.Helper()
	hostID := dockertest.UniqueName(t)
	e := &env{
		t: t, ctx: context.Background(), hostID: hostID,
		store: db.NewStore(pgtest.Pool(t), nil),
		eng:   dockertest.Engine(t, hostID),
		raw:   dockertest.Client(t),
		image: dockertest.EngineImage(t),
	}
	if _, err := e.store.RegisterHost(e.ctx, hostID, "agent", "test"); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) reconciler(grace time.Duration) *reconcile.Reconciler {
	log := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return reconcile.New(e.store, e.eng, reconcile.Config{HostID: e.hostID, OrphanGrace: grace, Logger: log})
}

type game struct {
	id, statePath string
	c             engine.Container
}

func (e *env) create(gameID string) game {
	e.t.Helper()
	dir := e.t.TempDir()
	c, err := e.eng.CreateContainer(e.ctx, engine.ContainerSpec{
		GameID: gameID, JobID: 1, Name: runtime.ContainerName(gameID + "-" + e.hostID), Image: e.image,
		Env: []string{"GAME_ID=" + gameID}, StatePath: dir, PidsLimit: 64,
	})
	if err != nil {
		e.t.Fatalf("CreateContainer: %v", err)
	}
	return game{id: gameID, statePath: dir, c: c}
}

func (e *env) record(g game, status runtime.Status) {
	e.t.Helper()
	_, err := e.store.UpdateRecord(e.ctx, g.id, func(_ *runtime.RuntimeRecord, at time.Time) (runtime.RuntimeRecord, outbox.TransitionDetails, error) {
		r, err := runtime.Create(runtime.Placement{
			GameID: g.id, HostID: e.hostID, EngineEndpoint: runtime.EngineEndpointFor(g.id),
			StatePath: g.statePath, DockerNetwork: "bridge",
		}, g.c.ID, e.image, at)
		if err == nil && status == runtime.StatusStopped {
			r, err = r.Stop(g.c.ID, at)
		}
		return r, outbox.TransitionDetails{Reason: outbox.ReasonJobStart, JobID: 1}, err
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) start(g game) {
	e.t.Helper()
	file := filepath.Join(g.statePath, "engine-started")
	if err := e.eng.StartContainer(e.ctx, g.c.ID); err != nil {
		e.t.Fatal(err)
	}
	wait.For(e.t, time.Minute, "engine "+g.id+" ready", func() bool {
		_, err := os.Stat(file)
		return err == nil
	})
}

func (e *env) get(gameID string) runtime.RuntimeRecord {
	e.t.Helper()
	r, err := e.store.GetRecord(e.ctx, gameID)
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

type stored struct {
	Type    outbox.Type
	Runtime outbox.RuntimePayload
	Orphan  outbox.OrphanPayload
}

// events returns the host's outbox events once at least want are readable.
func (e *env) events(want int) []stored {
	e.t.Helper()
	var out []stored
	wait.For(e.t, time.Minute, fmt.Sprintf("%d outbox events", want), func() bool {
		evs, err := e.store.ReadOutbox(e.ctx, db.Position{}, 100_000)
		if err != nil {
			e.t.Fatal(err)
		}
		out = out[:0]
		for _, ev := range evs {
			if ev.HostID != e.hostID {
				continue
			}
			s := stored{Type: ev.Type}
			dst := any(&s.Runtime)
			if ev.Type == outbox.TypeContainerOrphaned {
				dst = &s.Orphan
			}
			if err := json.Unmarshal(ev.Payload, dst); err != nil {
				e.t.Fatal(err)
			}
			out = append(out, s)
		}
		return len(out) >= want
	})
	return out
}

func (e *env) pass(r *reconcile.Reconciler) reconcile.Report {
	e.t.Helper()
	rep, err := r.Pass(e.ctx, "test")
	if err != nil {
		e.t.Fatalf("Pass: %v", err)
	}
	return rep
}

func TestRepairs(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	// running record, exited container → stopped (reconcile_exit).
	exited := e.create("exited")
	e.record(exited, runtime.StatusRunning)
	e.start(exited)
	if _, err := e.raw.ContainerKill(e.ctx, exited.c.ID, client.ContainerKillOptions{Signal: "SIGKILL"}); err != nil {
		t.Fatal(err)
	}
	wait.For(t, time.Minute, "container exited", func() bool {
		c, err := e.eng.InspectContainer(e.ctx, exited.c.ID)
		return err == nil && c.State == "exited"
	})
	// running and stopped records whose containers are gone → removed.
	goneRunning, goneStopped := e.create("gone-running"), e.create("gone-stopped")
	e.record(goneRunning, runtime.StatusRunning)
	e.record(goneStopped, runtime.StatusStopped)
	for _, g := range []game{goneRunning, goneStopped} {
		if err := e.eng.RemoveContainer(e.ctx, g.c.ID); err != nil {
			t.Fatal(err)
		}
	}
	// stopped record, running container → running (reconcile_start).
	revived := e.create("revived")
	e.record(revived, runtime.StatusStopped)
	e.start(revived)
	// In agreement: nothing to do.
	fine := e.create("fine")
	e.record(fine, runtime.StatusRunning)
	e.start(fine)
	created := e.events(5)

	r := e.reconciler(-1)
	rep := e.pass(r)
	if rep.Stopped != 1 || rep.Disposed != 2 || rep.Started != 1 || rep.Orphans != 0 || rep.Records != 5 || rep.Containers != 3 {
		t.Fatalf("report %+v", rep)
	}
	if got := e.get("exited"); got.Status != runtime.StatusStopped || got.CurrentContainerID != exited.c.ID {
		t.Errorf("exited: %+v", got)
	}
	for _, id := range []string{"gone-running", "gone-stopped"} {
		if got := e.get(id); got.Status != runtime.StatusRemoved || got.CurrentContainerID != "" {
			t.Errorf("%s: %+v", id, got)
		}
	}
	if got := e.get("revived"); got.Status != runtime.StatusRunning || got.StoppedAt != nil {
		t.Errorf("revived: %+v", got)
	}
	evs := e.events(len(created) + 4)[len(created):]
	want := map[string]outbox.Reason{
		"exited": outbox.ReasonReconcileExit, "gone-running": outbox.ReasonReconcileDispose,
		"gone-stopped": outbox.ReasonReconcileDispose, "revived": outbox.ReasonReconcileStart,
	}
	if len(evs) != 4 {
		t.Fatalf("%d events, want 4", len(evs))
	}
	for _, ev := range evs {
		p := ev.Runtime
		if want[p.GameID] != p.Reason {
			t.Errorf("game %s: reason %s, want %s", p.GameID, p.Reason, want[p.GameID])
		}
		if p.GameID == "exited" && (p.ExitCode == nil || *p.ExitCode != 137 || p.OOM) {
			t.Errorf("exit event %+v", p)
		}
		if p.Reason == outbox.ReasonReconcileDispose && p.ContainerID == "" {
			t.Errorf("dispose event names no container: %+v", p)
		}
	}

	// A second pass finds nothing and writes nothing.
	if rep := e.pass(r); rep.Repairs() != 0 || rep.OrphansReported != 0 {
		t.Errorf("second pass %+v", rep)
	}
	if n := len(e.events(0)); n != len(created)+4 {
		t.Errorf("second pass wrote events: %d", n-len(created)-4)
	}
}

func TestOrphans(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	noRecord := e.create("lonely")                                                  // labelled, no record
	owned := e.create("owned")                                                      // labelled, with its record
	second := e.createRaw("owned", runtime.ContainerName("owned-second-"+e.hostID)) // a second container of game "owned"
	busy := e.create("busy")                                                        // a job of its game is running
	removedGame := e.create("removed-game")                                         // its record is removed
	foreign := dockertest.CreateUnmanaged(t, runtime.ContainerName("foreign-"+e.hostID), e.image, nil)
	e.record(owned, runtime.StatusStopped)
	e.record(removedGame, runtime.StatusStopped)
	if _, err := e.store.UpdateRecord(e.ctx, "removed-game", func(cur *runtime.RuntimeRecord, at time.Time) (runtime.RuntimeRecord, outbox.TransitionDetails, error) {
		next, err := cur.Remove("", at)
		return next, outbox.TransitionDetails{Reason: outbox.ReasonJobRemove}, err
	}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.store.InsertJob(e.ctx, db.NewJob{HostID: e.hostID, GameID: "busy", Kind: job.KindStart, Payload: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	if js, err := e.store.ClaimJobs(e.ctx, e.hostID, "agent", 10, time.Minute); err != nil || len(js) != 1 {
		t.Fatalf("claim: %v, %v", js, err)
	}
	base := len(e.events(3))

	// Within the grace period: reported once, not removed.
	r := e.reconciler(time.Hour)
	rep := e.pass(r)
	if rep.Orphans != 4 || rep.OrphansReported != 3 || rep.OrphansRemoved != 0 || rep.Skipped != 1 {
		t.Fatalf("first pass %+v", rep)
	}
	if rep := e.pass(r); rep.OrphansReported != 0 {
		t.Fatalf("second pass reported again: %+v", rep)
	}
	// A restarted agent does not report them again either.
	if rep := e.pass(e.reconciler(time.Hour)); rep.OrphansReported != 0 {
		t.Fatalf("new reconciler reported again: %+v", rep)
	}
	evs := e.events(base + 3)[base:]
	var reported []string
	for _, ev := range evs {
		if ev.Type != outbox.TypeContainerOrphaned {
			t.Fatalf("unexpected event %+v", ev)
		}
		reported = append(reported, ev.Orphan.ContainerID)
	}
	slices.Sort(reported)
	wantIDs := []string{noRecord.c.ID, second.c.ID, removedGame.c.ID}
	slices.Sort(wantIDs)
	if !slices.Equal(reported, wantIDs) {
		t.Fatalf("reported %v, want %v", reported, wantIDs)
	}

	// After the grace period: removed, except the one a job holds, ours
	// with a record, and the foreign one.
	rep = e.pass(e.reconciler(time.Nanosecond))
	if rep.OrphansRemoved != 3 || rep.OrphansReported != 0 {
		t.Fatalf("removing pass %+v", rep)
	}
	for _, id := range []string{noRecord.c.ID, second.c.ID, removedGame.c.ID} {
		if _, err := e.eng.InspectContainer(e.ctx, id); !errors.Is(err, engine.ErrNotFound) {
			t.Errorf("orphan %s still there: %v", id, err)
		}
	}
	for _, id := range []string{owned.c.ID, busy.c.ID} {
		if _, err := e.eng.InspectContainer(e.ctx, id); err != nil {
			t.Errorf("container %s: %v", id, err)
		}
	}
	if _, err := e.raw.ContainerInspect(e.ctx, foreign, client.ContainerInspectOptions{}); err != nil {
		t.Errorf("foreign container: %v", err)
	}
	if got := e.get("owned"); got.Status != runtime.StatusStopped || got.CurrentContainerID != owned.c.ID {
		t.Errorf("owned record %+v", got)
	}
}

// createRaw creates a container of ours for gameID under any name.
func (e *env) createRaw(gameID, name string) game {
	e.t.Helper()
	c, err := e.eng.CreateContainer(e.ctx, engine.ContainerSpec{
		GameID: gameID, JobID: 2, Name: name, Image: e.image, StatePath: e.t.TempDir(),
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return game{id: gameID, c: c}
}

func TestConcurrentPassesSerialise(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.create("g")
	e.record(g, runtime.StatusRunning)
	if err := e.eng.RemoveContainer(e.ctx, g.c.ID); err != nil {
		t.Fatal(err)
	}
	r := e.reconciler(-1)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total int
	)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rep, err := r.Pass(e.ctx, "concurrent")
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			total += rep.Disposed
			mu.Unlock()
		}()
	}
	wg.Wait()
	if total != 1 {
		t.Errorf("%d disposals, want 1", total)
	}
	if n := len(e.events(2)); n != 2 {
		t.Errorf("%d events, want 2", n)
	}
}

// TestLeavesTheSweepersRemovalToTheSweeper: between the sweeper's remove
// and its commit the container is gone and the record still stopped; a
// pass then must not report the cleanup as a dispose. Once the intent has
// expired (the sweeper failed to commit) the pass repairs the record.
func TestLeavesTheSweepersRemovalToTheSweeper(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.create("swept")
	e.record(g, runtime.StatusStopped)
	var (
		mu  sync.Mutex
		now = time.Now()
	)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	intents := intent.New(time.Minute, clock)
	intents.Expect(g.c.ID, intent.Cleanup)
	if err := e.eng.RemoveContainer(e.ctx, g.c.ID); err != nil {
		t.Fatal(err)
	}
	r := reconcile.New(e.store, e.eng, reconcile.Config{HostID: e.hostID, OrphanGrace: -1, Intents: intents, Logger: slog.New(slog.DiscardHandler)})
	if rep := e.pass(r); rep.Repairs() != 0 || rep.Skipped != 1 {
		t.Fatalf("pass during the sweeper's removal: %+v, want the record skipped", rep)
	}
	if got := e.get("swept"); got.Status != runtime.StatusStopped {
		t.Fatalf("record during the sweeper's removal: %+v", got)
	}
	mu.Lock()
	now = now.Add(2 * time.Minute)
	mu.Unlock()
	if rep := e.pass(r); rep.Disposed != 1 {
		t.Fatalf("pass after the intent expired: %+v, want a dispose", rep)
	}
	if got := e.get("swept"); got.Status != runtime.StatusRemoved {
		t.Fatalf("record after the intent expired: %+v", got)
	}
}

// TestLeavesAGameWithAJobInProgressToTheJob: a job of the game is running
// (it is changing the container and commits the record itself), or queued
// again for its next attempt (which commits it), so a pass leaves the
// record as it is; once the job is over, a pass repairs it.
func TestLeavesAGameWithAJobInProgressToTheJob(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.create("busy")
	e.record(g, runtime.StatusRunning)
	if err := e.eng.RemoveContainer(e.ctx, g.c.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.store.InsertJob(e.ctx, db.NewJob{HostID: e.hostID, GameID: "busy", Kind: job.KindStop, Payload: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	claimed, err := e.store.ClaimJobs(e.ctx, e.hostID, "owner-1", 1, time.Minute)
	if err != nil || len(claimed) != 1 {
		t.Fatalf("claim: %d jobs, %v", len(claimed), err)
	}
	r := e.reconciler(-1)
	if rep := e.pass(r); rep.Repairs() != 0 || rep.Skipped != 1 {
		t.Fatalf("pass while the job runs: %+v, want the record skipped", rep)
	}
	if got := e.get("busy"); got.Status != runtime.StatusRunning {
		t.Fatalf("record while the job runs: %+v", got)
	}
	if _, err := e.store.RetryJob(e.ctx, claimed[0], "owner-1", time.Hour, "daemon busy"); err != nil {
		t.Fatal(err)
	}
	if rep := e.pass(r); rep.Repairs() != 0 || rep.Skipped != 1 {
		t.Fatalf("pass while the job waits for its next attempt: %+v, want the record skipped", rep)
	}
	if _, err := e.store.Pool().Exec(e.ctx, `UPDATE jobs SET run_after = now() WHERE id = $1`, claimed[0].ID); err != nil {
		t.Fatal(err)
	}
	if claimed, err = e.store.ClaimJobs(e.ctx, e.hostID, "owner-1", 1, time.Minute); err != nil || len(claimed) != 1 {
		t.Fatalf("claim again: %d jobs, %v", len(claimed), err)
	}
	if _, err := e.store.FinishJob(e.ctx, claimed[0], "owner-1", db.Outcome{Status: job.StatusFailed, Error: "gave up"}); err != nil {
		t.Fatal(err)
	}
	if rep := e.pass(r); rep.Disposed != 1 {
		t.Fatalf("pass after the job: %+v, want a dispose", rep)
	}
}

// listingRace is the real engine with work slipped in right before and
// right after the pass lists the containers, as other writers of the host
// could do.
type listingRace struct {
	engine.Engine
	before, after func()
}

func (l *listingRace) ListManaged(ctx context.Context) ([]engine.Container, error) {
	l.before()
	cs, err := l.Engine.ListManaged(ctx)
	l.after()
	return cs, err
}

// TestNoOrphanReportOfAContainerGoneSinceTheListing: between the pass's
// record listing and its container listing a job creates a game's
// container and commits its record; right after the container listing the
// sweeper removes the container and commits the record's removal. The pass
// sees a container no listed record owns, but by the time it decides, the
// container is gone: nothing to report.
func TestNoOrphanReportOfAContainerGoneSinceTheListing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var g game
	race := &listingRace{
		Engine: e.eng,
		before: func() {
			g = e.create("raced")
			e.record(g, runtime.StatusStopped)
		},
		after: func() {
			if err := e.eng.RemoveContainer(e.ctx, g.c.ID); err != nil {
				t.Fatal(err)
			}
			if _, err := e.store.CommitCleanup(e.ctx, e.get("raced")); err != nil {
				t.Fatal(err)
			}
		},
	}
	r := reconcile.New(e.store, race, reconcile.Config{HostID: e.hostID, OrphanGrace: time.Hour, Logger: slog.New(slog.DiscardHandler)})
	rep := e.pass(r)
	if rep.Orphans != 1 || rep.OrphansReported != 0 || rep.Skipped != 1 {
		t.Errorf("pass %+v; want the unlisted container seen, found gone, not reported", rep)
	}
	for _, ev := range e.events(2) {
		if ev.Type == outbox.TypeContainerOrphaned {
			t.Errorf("orphan reported for a container removed by its record's writer: %+v", ev.Orphan)
		}
	}
	if got := e.get("raced"); got.Status != runtime.StatusRemoved {
		t.Errorf("record %+v; want the sweeper's removal", got)
	}
}

// TestPeriodicPassLeavesFreshChangesToTheirEvents: a periodic pass leaves an
// exit or a start younger than the event grace to the events watcher (which
// reports it as observed_*); any other pass, and a periodic pass once the
// change is older, repairs it.
func TestPeriodicPassLeavesFreshChangesToTheirEvents(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	exited := e.create("fresh-exit")
	e.record(exited, runtime.StatusRunning)
	e.start(exited)
	revived := e.create("fresh-start")
	e.record(revived, runtime.StatusStopped)
	e.start(revived)
	if _, err := e.raw.ContainerKill(e.ctx, exited.c.ID, client.ContainerKillOptions{Signal: "SIGKILL"}); err != nil {
		t.Fatal(err)
	}
	wait.For(t, time.Minute, "the container to exit", func() bool {
		c, err := e.eng.InspectContainer(e.ctx, exited.c.ID)
		return err == nil && c.State == "exited"
	})
	periodic := func(grace time.Duration) reconcile.Report {
		t.Helper()
		r := reconcile.New(e.store, e.eng, reconcile.Config{HostID: e.hostID, OrphanGrace: -1, EventGrace: grace, Logger: slog.New(slog.DiscardHandler)})
		rep, err := r.Pass(e.ctx, reconcile.PeriodicPass)
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	if rep := periodic(time.Hour); rep.Repairs() != 0 || rep.Skipped != 2 {
		t.Fatalf("periodic pass within the grace: %+v; want both left to their events", rep)
	}
	if rep := periodic(time.Nanosecond); rep.Stopped != 1 || rep.Started != 1 {
		t.Fatalf("periodic pass after the grace: %+v; want both repaired", rep)
	}
}
