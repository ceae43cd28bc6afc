package watcher_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/galaxy/rtmanager/agent/engine"
	"github.com/galaxy/rtmanager/agent/watcher"
	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/domain/outbox"
	"github.com/galaxy/rtmanager/internal/domain/runtime"
	"github.com/galaxy/rtmanager/internal/testutil/dockertest"
	"github.com/galaxy/rtmanager/internal/testutil/wait"
)

// createWithHealth creates, with the raw client, a container with our
// labels and the engine's health check probing every 100 ms.
func (e *env) createWithHealth(gameID, mode string) game {
	return e.createProbing(gameID, mode, 100*time.Millisecond)
}

func (e *env) createProbing(gameID, mode string, every time.Duration) game {
	e.t.Helper()
	dir := e.t.TempDir()
	res, err := e.raw.ContainerCreate(e.ctx, client.ContainerCreateOptions{
		Name: runtime.ContainerName(gameID + "-" + e.hostID),
		Config: &container.Config{
			Image: e.image,
			Env:   []string{"GAME_ID=" + gameID, "ENGINE_HEALTH=" + mode},
			Labels: map[string]string{
				engine.LabelManaged: "true", engine.LabelHost: e.hostID, engine.LabelGame: gameID, engine.LabelJob: "1",
			},
			Healthcheck: &container.HealthConfig{
				Test: []string{"CMD", "/engine", "healthcheck"}, Interval: every,
				Timeout: 5 * time.Second, Retries: 2,
			},
		},
		HostConfig: &container.HostConfig{
			Binds: []string{dir + ":/state"}, CapDrop: []string{"ALL"}, SecurityOpt: []string{"no-new-privileges"},
		},
	})
	if err != nil {
		e.t.Fatalf("create container with a health check: %v", err)
	}
	c, err := e.eng.InspectContainer(e.ctx, res.ID)
	if err != nil {
		e.t.Fatal(err)
	}
	return game{id: gameID, statePath: dir, c: c}
}

// healthEvents returns the runtime.health events of the game.
func (e *env) healthEvents(gameID string) []outbox.HealthPayload {
	e.t.Helper()
	evs, err := e.store.ReadOutbox(e.ctx, db.Position{}, 100_000)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []outbox.HealthPayload
	for _, ev := range evs {
		if ev.Type != outbox.TypeRuntimeHealth || ev.GameID != gameID || ev.HostID != e.hostID {
			continue
		}
		var p outbox.HealthPayload
		if err := json.Unmarshal(ev.Payload, &p); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

func (e *env) health(gameID string) runtime.Health {
	e.t.Helper()
	h, err := e.store.Health(e.ctx, gameID)
	if err != nil {
		e.t.Fatal(err)
	}
	return h
}

// TestHealthChangesAreEventsNotProbes: an engine that becomes healthy,
// one that never does and one that flaps each get one runtime.health event
// per change of health (none per probe: a relist after many probes adds
// none), the record says the health, and an exit resets it to none.
func TestHealthChangesAreEventsNotProbes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.startWatcher(watcher.Config{})

	ready := e.createWithHealth("ready", "after:300ms")
	never := e.createWithHealth("never", "never")
	flap := e.createWithHealth("flap", "flap:700ms")
	for _, g := range []game{ready, never, flap} {
		e.record(g)
		e.startReady(g)
	}
	wait.For(t, time.Minute, "ready healthy", func() bool { return e.health("ready") == runtime.HealthHealthy })
	wait.For(t, time.Minute, "never unhealthy", func() bool { return e.health("never") == runtime.HealthUnhealthy })
	wait.For(t, time.Minute, "flap changed 4 times", func() bool { return len(e.healthEvents("flap")) >= 4 })
	wait.For(t, time.Minute, "health events readable", func() bool {
		return len(e.healthEvents("ready")) > 0 && len(e.healthEvents("never")) > 0
	})

	// Many probes later, a relist finds the records right: no new event.
	c, err := e.eng.InspectContainer(e.ctx, ready.c.ID)
	if err != nil || c.Health != "healthy" {
		t.Fatalf("inspect: %+v %v", c, err)
	}
	// (The flapping engine may change between the relist's inspect and its
	// event: the relist may then report that change first, so only the
	// steady engines are counted.)
	if _, err := e.rec.Pass(e.ctx, "test"); err != nil {
		t.Fatal(err)
	}
	if got := e.healthEvents("ready"); len(got) != 1 || got[0].FromHealth != runtime.HealthNone || got[0].Health != runtime.HealthHealthy ||
		got[0].Reason != outbox.HealthObserved || got[0].ContainerID != ready.c.ID {
		t.Errorf("ready health events %+v, want one none -> healthy", got)
	}
	if got := e.healthEvents("never"); len(got) != 1 || got[0].Health != runtime.HealthUnhealthy {
		t.Errorf("never health events %+v, want one none -> unhealthy", got)
	}
	fl := e.healthEvents("flap")
	for i, p := range fl {
		if p.FromHealth == p.Health || (i > 0 && p.FromHealth != fl[i-1].Health) {
			t.Fatalf("flap events are not a chain of changes: %+v", fl)
		}
	}

	// An exit forgets the health.
	e.kill(never.c.ID, "SIGKILL")
	e.waitStatus("never", runtime.StatusStopped)
	if h := e.health("never"); h != runtime.HealthNone {
		t.Errorf("stopped record health %s, want none", h)
	}
}

// TestRelistRepairsAMissedHealth: with no watcher running, a relist's
// inspect sets the health, with reason reconcile_health, once.
func TestRelistRepairsAMissedHealth(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.createWithHealth("missed", "")
	e.record(g)
	e.startReady(g)
	wait.For(t, time.Minute, "container healthy", func() bool {
		c, err := e.eng.InspectContainer(e.ctx, g.c.ID)
		return err == nil && c.Health == "healthy"
	})
	for i, want := range []int{1, 0} {
		rep, err := e.rec.Pass(e.ctx, "test")
		if err != nil {
			t.Fatal(err)
		}
		if rep.Health != want {
			t.Fatalf("pass %d repaired %d healths, want %d", i, rep.Health, want)
		}
	}
	wait.For(t, time.Minute, "health event", func() bool { return len(e.healthEvents("missed")) > 0 })
	if got := e.healthEvents("missed"); len(got) != 1 || got[0].Reason != outbox.HealthReconciled || got[0].Health != runtime.HealthHealthy {
		t.Fatalf("health events %+v", got)
	}
}

// TestImageHealthcheckIsFollowed: an engine whose image declares a
// HEALTHCHECK (imported with --change), created the agent's way (no check
// in the container spec), becomes healthy on its record with one event.
func TestImageHealthcheckIsFollowed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.image = dockertest.EngineImageHealthy(t, "rtmanager-engine-healthy:"+e.hostID)
	e.startWatcher(watcher.Config{})
	// The engine answers healthy from its start. The image checks every
	// 200 ms and calls it unhealthy after two failed probes, so an engine
	// that answers 503 for its first 500 ms was unhealthy at the second
	// probe (400 ms) whenever Docker kept to the schedule, on a quiet
	// machine, and the record rightly had two changes.
	g := e.create("imagecheck")
	e.record(g)
	e.startReady(g)
	wait.For(t, time.Minute, "healthy", func() bool { return e.health("imagecheck") == runtime.HealthHealthy })
	// The outbox is read gap-free: the event shows once no older
	// transaction is in flight.
	wait.For(t, time.Minute, "health event", func() bool { return len(e.healthEvents("imagecheck")) > 0 })
	if got := e.healthEvents("imagecheck"); len(got) != 1 || got[0].Health != runtime.HealthHealthy {
		t.Fatalf("health events %+v, want one change to healthy", got)
	}
}
