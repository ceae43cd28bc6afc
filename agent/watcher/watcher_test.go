package watcher_test

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
	"golang.org/x/sync/errgroup"

	"github.com/galaxy/rtmanager/agent/engine"
	"github.com/galaxy/rtmanager/agent/reconcile"
	"github.com/galaxy/rtmanager/agent/watcher"
	"github.com/galaxy/rtmanager/internal/domain/outbox"
	"github.com/galaxy/rtmanager/internal/domain/runtime"
	"github.com/galaxy/rtmanager/internal/testutil/dockertest"
	"github.com/galaxy/rtmanager/internal/testutil/wait"
)

func TestKillRemoveAndRestartPolicy(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.startWatcher(watcher.Config{})

	// Killed with a signal: stopped with its exit code, one event.
	g1 := e.runningGame("g1")
	e.kill(g1.c.ID, "SIGKILL")
	r := e.waitStatus("g1", runtime.StatusStopped)
	if r.CurrentContainerID != g1.c.ID || r.StoppedAt == nil {
		t.Errorf("stopped record %+v", r)
	}
	byGame, _ := e.events(2)
	if got := reasons(byGame["g1"]); !slices.Equal(got, []string{"observed_die"}) {
		t.Fatalf("g1 transitions %v, want [observed_die]", got)
	}
	die := byGame["g1"][1]
	if die.ExitCode == nil || *die.ExitCode != 137 || die.OOM || die.RequestedByJob || die.FromStatus != runtime.StatusRunning {
		t.Errorf("die event %+v", die.RuntimePayload)
	}

	// Removed: record removed, container id cleared.
	if err := e.eng.RemoveContainer(e.ctx, g1.c.ID); err != nil {
		t.Fatal(err)
	}
	r = e.waitStatus("g1", runtime.StatusRemoved)
	if r.CurrentContainerID != "" {
		t.Errorf("removed record keeps container %q", r.CurrentContainerID)
	}

	// A stop while a stop job of the game is in progress (claimed, here
	// by a test owner) is that job's, with its id.
	g3 := e.runningGame("g3")
	stopJob := e.claimedJob("g3", "stop")
	if err := e.eng.StopContainer(e.ctx, g3.c.ID, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	e.waitStatus("g3", runtime.StatusStopped)

	// Restarted by Docker's restart policy: die → stopped, start → running,
	// and the last exit (no retries left) → stopped.
	g2 := e.createWithRestartPolicy("g2", container.RestartPolicy{Name: container.RestartPolicyOnFailure, MaximumRetryCount: 1},
		"ENGINE_EXIT_AFTER=1s", "ENGINE_EXIT_CODE=3")
	e.record(g2)
	if _, err := e.raw.ContainerStart(e.ctx, g2.c.ID, client.ContainerStartOptions{}); err != nil {
		t.Fatal(err)
	}
	wait.For(t, time.Minute, "g2 restarted once and exited", func() bool {
		res, err := e.raw.ContainerInspect(e.ctx, g2.c.ID, client.ContainerInspectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return res.Container.RestartCount == 1 && res.Container.State.Status == container.StateExited
	})
	byGame, _ = e.events(3 + 2 + 4)
	if got, want := reasons(byGame["g2"]), []string{"observed_die", "observed_start", "observed_die"}; !slices.Equal(got, want) {
		t.Fatalf("g2 transitions %v, want %v", got, want)
	}
	for _, i := range []int{1, 3} {
		if ev := byGame["g2"][i]; ev.ExitCode == nil || *ev.ExitCode != 3 {
			t.Errorf("g2 die event %+v", ev.RuntimePayload)
		}
	}
	if ev := byGame["g2"][2]; ev.ToStatus != runtime.StatusRunning || ev.FromStatus != runtime.StatusStopped {
		t.Errorf("g2 restart event %+v", ev.RuntimePayload)
	}
	if r := e.get("g2"); r.Status != runtime.StatusStopped {
		t.Errorf("g2 record %s, want stopped", r.Status)
	}
	if got := reasons(byGame["g3"]); !slices.Equal(got, []string{"job_stop"}) {
		t.Fatalf("g3 transitions %v", got)
	} else if ev := byGame["g3"][1]; !ev.RequestedByJob || ev.JobID == nil || *ev.JobID != stopJob || *ev.ExitCode != 0 {
		t.Errorf("requested stop event %+v", ev.RuntimePayload)
	}

	// Applying the same events again changes nothing: a new watcher replays
	// the whole ring (cursor margin of an hour) and writes no event.
	e.stop()
	before, _ := e.events(0)
	total := func(m map[string][]transition) (n int) {
		for _, ts := range m {
			n += len(ts)
		}
		return n
	}
	e.startWatcher(watcher.Config{CursorMargin: time.Hour})
	// The stream is ordered: once a new game's die is applied, the replay
	// before it has been handled.
	g4 := e.runningGame("g4")
	e.kill(g4.c.ID, "SIGKILL")
	e.waitStatus("g4", runtime.StatusStopped)
	after, _ := e.events(total(before) + 2)
	if total(after) != total(before)+2 {
		t.Errorf("replay wrote events: %d before, %d after (2 of them g4's)", total(before), total(after))
	}
	// The watcher counts an event after its commit: wait for g4's die.
	wait.For(t, time.Minute, "g4's die counted", func() bool { return e.w.Stats().Applied >= 1 })
	if s := e.w.Stats(); s.Applied != 1 {
		t.Errorf("replay stats %+v, want only g4's die applied", s)
	}
}

func TestForeignContainersAreNeverTouched(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.rec = reconcile.New(e.store, e.eng, reconcile.Config{HostID: e.hostID, OrphanGrace: time.Nanosecond, Logger: testLogger(t)})
	e.startWatcher(watcher.Config{})

	foreign := []string{
		// Same name pattern, no labels at all.
		dockertest.CreateUnmanaged(t, runtime.ContainerName("x-"+e.hostID), e.image, map[string]string{engine.LabelGame: "x"}),
		// Our labels, another host.
		dockertest.CreateUnmanaged(t, runtime.ContainerName("y-"+e.hostID), e.image, map[string]string{
			engine.LabelManaged: "true", engine.LabelHost: e.hostID + "-other", engine.LabelGame: "y",
		}),
	}
	for _, id := range foreign {
		if _, err := e.raw.ContainerStart(e.ctx, id, client.ContainerStartOptions{}); err != nil {
			t.Fatal(err)
		}
		e.kill(id, "SIGKILL")
	}
	// Events are ordered: once the sentinel's die is applied, the foreign
	// containers' events would have been seen.
	s := e.runningGame("sentinel")
	e.kill(s.c.ID, "SIGKILL")
	e.waitStatus("sentinel", runtime.StatusStopped)
	if _, err := e.rec.Pass(e.ctx, "test"); err != nil {
		t.Fatal(err)
	}
	for _, id := range foreign {
		res, err := e.raw.ContainerInspect(e.ctx, id, client.ContainerInspectOptions{})
		if err != nil {
			t.Fatalf("foreign container %s: %v", id, err)
		}
		if res.Container.State.Status != container.StateExited {
			t.Errorf("foreign container %s is %s", id, res.Container.State.Status)
		}
	}
	byGame, orphans := e.events(2)
	if len(byGame) != 1 || len(orphans) != 0 {
		t.Errorf("events: %v, orphans %v", byGame, orphans)
	}
	if st := e.w.Stats(); st.Ignored != 0 {
		t.Errorf("watcher saw foreign events: %+v", st)
	}
}

func TestAgentDownThenBack(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.startWatcher(watcher.Config{})
	a, b, c := e.runningGame("a"), e.runningGame("b"), e.runningGame("c")
	d := e.create("d")
	e.record(d)
	e.startReady(d)
	e.kill(c.c.ID, "SIGKILL")
	e.waitStatus("c", runtime.StatusStopped)
	wait.For(t, time.Minute, "cursor stored", func() bool { return e.w.Stats().Cursor > 0 })
	e.stop()

	// While the agent is down: a dies, b is removed, c starts again, d is
	// stopped and removed.
	e.kill(a.c.ID, "SIGKILL")
	if _, err := e.raw.ContainerRemove(e.ctx, b.c.ID, client.ContainerRemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	e.startReady(c)
	if _, err := e.raw.ContainerRemove(e.ctx, d.c.ID, client.ContainerRemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}

	e.startWatcher(watcher.Config{})
	e.waitStatus("a", runtime.StatusStopped)
	e.waitStatus("b", runtime.StatusRemoved)
	e.waitStatus("c", runtime.StatusRunning)
	e.waitStatus("d", runtime.StatusRemoved)
	// A further pass finds nothing to do.
	rep, err := e.rec.Pass(e.ctx, "test")
	if err != nil || rep.Repairs() != 0 || rep.OrphansReported != 0 {
		t.Fatalf("second pass: %+v, %v", rep, err)
	}
	byGame, _ := e.events(4 + 1 + 1 + 2 + 1)
	want := map[string][]runtime.Status{
		"a": {runtime.StatusStopped},
		"b": {runtime.StatusRemoved},
		"c": {runtime.StatusStopped, runtime.StatusRunning},
		"d": {runtime.StatusRemoved},
	}
	for game, statuses := range want {
		var got []runtime.Status
		for _, ev := range byGame[game][1:] {
			got = append(got, ev.ToStatus)
		}
		if !slices.Equal(got, statuses) {
			t.Errorf("game %s: transitions to %v (%v), want %v", game, got, reasons(byGame[game]), statuses)
		}
	}
	if ev := byGame["a"][1]; ev.ExitCode == nil || *ev.ExitCode != 137 {
		t.Errorf("a's stop: %+v", ev.RuntimePayload)
	}
}

// startMany creates, records and starts n games in parallel.
func (e *env) startMany(prefix string, n int) []game {
	e.t.Helper()
	games := make([]game, n)
	var g errgroup.Group
	g.SetLimit(8)
	for i := range n {
		g.Go(func() error {
			games[i] = e.create(fmt.Sprintf("%s%03d", prefix, i))
			e.record(games[i])
			if err := e.eng.StartContainer(e.ctx, games[i].c.ID); err != nil {
				return err
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		e.t.Fatal(err)
	}
	for _, gm := range games {
		e.waitReady(gm)
	}
	return games
}

func (e *env) killAll(games []game) {
	e.t.Helper()
	var g errgroup.Group
	g.SetLimit(32)
	for _, gm := range games {
		g.Go(func() error {
			_, err := e.raw.ContainerKill(e.ctx, gm.c.ID, client.ContainerKillOptions{Signal: "SIGKILL"})
			return err
		})
	}
	if err := g.Wait(); err != nil {
		e.t.Fatal(err)
	}
}

// checkOneStop asserts that every game is stopped and reported exactly one
// stop.
func (e *env) checkOneStop(games []game) {
	e.t.Helper()
	for _, gm := range games {
		e.waitStatus(gm.id, runtime.StatusStopped)
	}
	byGame, _ := e.events(2 * len(games))
	for _, gm := range games {
		if got := byGame[gm.id]; len(got) != 2 || got[1].ToStatus != runtime.StatusStopped {
			e.t.Errorf("game %s: %d events, reasons %v", gm.id, len(got), reasons(got))
		}
	}
}

func TestBurstOfDeaths(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("200 containers")
	}
	e := newEnv(t)
	e.startWatcher(watcher.Config{})
	games := e.startMany("burst", 200)
	e.killAll(games)
	e.checkOneStop(games)
	// Counters trail the commits they count: wait, with a deadline, for
	// them to account for every death, by event or by relist.
	wait.For(t, time.Minute, "every death applied or relisted", func() bool {
		st := e.w.Stats()
		return st.Applied >= int64(len(games)) || st.Relists >= 2
	})
	t.Logf("watcher stats after the burst: %+v", e.w.Stats())
}

func TestOverflowFallsBackToRelist(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var (
		block atomic.Bool
		gate  = make(chan struct{})
		once  sync.Once
	)
	e.startWatcher(watcher.Config{BufferSize: 2}, func(w *watcher.Watcher) {
		watcher.SetApplyHook(w, func(engine.Event) {
			if block.Load() {
				<-gate
			}
		})
	})
	release := func() { once.Do(func() { block.Store(false); close(gate) }) }
	t.Cleanup(release)
	games := e.startMany("of", 12)
	// Let the start events be applied, then hold the applier while the
	// dies arrive: the buffer (2) overflows.
	// The buffer of 2 may already overflow during the starts (the relist
	// then covers them): count dropped start events as handled too.
	wait.For(t, time.Minute, "start events handled", func() bool {
		st := e.w.Stats()
		return st.Received+st.Dropped+watcher.PendingDrops(e.w) >= int64(len(games))
	})
	block.Store(true)
	e.killAll(games)
	wait.For(t, time.Minute, "events dropped", func() bool { return watcher.PendingDrops(e.w) > 0 })
	release()
	e.checkOneStop(games)
	st := e.w.Stats()
	if st.Overflows == 0 || st.Dropped == 0 || st.Relists < 2 {
		t.Errorf("stats %+v: want an overflow, dropped events and a relist", st)
	}
	var fromRelist int
	byGame, _ := e.events(0)
	for _, gm := range games {
		if byGame[gm.id][1].Reason == outbox.ReasonReconcileExit {
			fromRelist++
		}
	}
	if fromRelist == 0 {
		t.Errorf("no stop came from the relist")
	}
}
