package watcher_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/galaxy/rtmanager/agent/engine"
	"github.com/galaxy/rtmanager/agent/intent"
	"github.com/galaxy/rtmanager/agent/reconcile"
	"github.com/galaxy/rtmanager/agent/watcher"
	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/domain/outbox"
	"github.com/galaxy/rtmanager/internal/domain/runtime"
	"github.com/galaxy/rtmanager/internal/testutil/dockertest"
	"github.com/galaxy/rtmanager/internal/testutil/pgtest"
	"github.com/galaxy/rtmanager/internal/testutil/wait"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// env is one test's host: its own host id (so its containers and events
// are its own), database, engine and watcher.
type env struct {
	t       testing.TB
	ctx     context.Context
	hostID  string
	store   *db.Store
	eng     *engine.Docker
	raw     *client.Client
	image   string
	intents *intent.Registry
	rec     *reconcile.Reconciler
	w       *watcher.Watcher
	stop    func()
}

func newEnv(t testing.TB) *env {
	t.Helper()
	hostID := dockertest.UniqueName(t)
	e := &env{
		t:       t,
		ctx:     context.Background(),
		hostID:  hostID,
		store:   db.NewStore(pgtest.Pool(t), nil),
		eng:     dockertest.Engine(t, hostID),
		raw:     dockertest.Client(t),
		image:   dockertest.EngineImage(t),
		intents: intent.New(time.Minute, nil),
	}
	if _, err := e.store.RegisterHost(e.ctx, hostID, "agent-"+hostID, "test"); err != nil {
		t.Fatal(err)
	}
	e.rec = reconcile.New(e.store, e.eng, reconcile.Config{HostID: hostID, OrphanGrace: time.Hour, Logger: testLogger(t)})
	return e
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("test", t.Name())
	}
	return slog.New(slog.DiscardHandler)
}

// startWatcher runs a watcher until the test ends (or e.stop) and waits
// until it is connected.
func (e *env) startWatcher(cfg watcher.Config, setup ...func(*watcher.Watcher)) {
	e.t.Helper()
	cfg.HostID = e.hostID
	if cfg.Logger == nil {
		cfg.Logger = testLogger(e.t)
	}
	e.w = watcher.New(e.store, e.eng, e.rec, e.intents, cfg)
	for _, f := range setup {
		f(e.w)
	}
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan error, 1)
	go func() { done <- e.w.Run(ctx) }()
	var once sync.Once
	e.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				e.t.Errorf("watcher Run: %v", err)
			}
		})
	}
	e.t.Cleanup(e.stop)
	wait.For(e.t, time.Minute, "watcher connected", e.w.Connected)
}

type game struct {
	id        string
	statePath string
	c         engine.Container
}

// create creates (not starts) a managed engine container for a new game.
func (e *env) create(gameID string, envv ...string) game {
	e.t.Helper()
	dir := e.t.TempDir()
	c, err := e.eng.CreateContainer(e.ctx, engine.ContainerSpec{
		GameID: gameID, JobID: 1, Name: runtime.ContainerName(gameID + "-" + e.hostID), Image: e.image,
		Env: append([]string{"GAME_ID=" + gameID}, envv...), StatePath: dir,
		MemoryBytes: 64 << 20, PidsLimit: 64,
	})
	if err != nil {
		e.t.Fatalf("CreateContainer: %v", err)
	}
	return game{id: gameID, statePath: dir, c: c}
}

// createWithRestartPolicy creates, with the raw client, a container carrying
// our labels and a restart policy (the engine never sets one).
func (e *env) createWithRestartPolicy(gameID string, policy container.RestartPolicy, envv ...string) game {
	e.t.Helper()
	dir := e.t.TempDir()
	res, err := e.raw.ContainerCreate(e.ctx, client.ContainerCreateOptions{
		Name: runtime.ContainerName(gameID + "-" + e.hostID),
		Config: &container.Config{
			Image: e.image,
			Env:   append([]string{"GAME_ID=" + gameID}, envv...),
			Labels: map[string]string{
				engine.LabelManaged: "true", engine.LabelHost: e.hostID, engine.LabelGame: gameID, engine.LabelJob: "1",
			},
		},
		HostConfig: &container.HostConfig{
			RestartPolicy: policy,
			Binds:         []string{dir + ":/state"},
			CapDrop:       []string{"ALL"},
			SecurityOpt:   []string{"no-new-privileges"},
		},
	})
	if err != nil {
		e.t.Fatalf("create container with restart policy: %v", err)
	}
	c, err := e.eng.InspectContainer(e.ctx, res.ID)
	if err != nil {
		e.t.Fatal(err)
	}
	return game{id: gameID, statePath: dir, c: c}
}

// record writes the running record of g, as a start job would.
func (e *env) record(g game) runtime.RuntimeRecord {
	e.t.Helper()
	ch, err := e.store.UpdateRecord(e.ctx, g.id, func(cur *runtime.RuntimeRecord, at time.Time) (runtime.RuntimeRecord, outbox.TransitionDetails, error) {
		r, err := runtime.Create(runtime.Placement{
			GameID: g.id, HostID: e.hostID, EngineEndpoint: runtime.EngineEndpointFor(g.id),
			StatePath: g.statePath, DockerNetwork: "bridge",
		}, g.c.ID, e.image, at)
		return r, outbox.TransitionDetails{Reason: outbox.ReasonJobStart, JobID: 1}, err
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return ch.Record
}

// startReady starts g's container and waits for the engine to report that
// its signal handling is set up.
func (e *env) startReady(g game) {
	e.t.Helper()
	file := filepath.Join(g.statePath, "engine-started")
	if err := os.Remove(file); err != nil && !errors.Is(err, os.ErrNotExist) {
		e.t.Fatal(err)
	}
	if err := e.eng.StartContainer(e.ctx, g.c.ID); err != nil {
		e.t.Fatal(err)
	}
	e.waitReady(g)
}

func (e *env) waitReady(g game) {
	e.t.Helper()
	file := filepath.Join(g.statePath, "engine-started")
	wait.For(e.t, time.Minute, "engine "+g.id+" ready", func() bool {
		_, err := os.Stat(file)
		return err == nil
	})
}

// runningGame creates, records and starts a game.
func (e *env) runningGame(gameID string) game {
	e.t.Helper()
	g := e.create(gameID)
	e.record(g)
	e.startReady(g)
	return g
}

// claimedJob inserts a job of the game claimed by a test owner (no worker
// runs here), so that the game has a job in progress, and returns its id.
func (e *env) claimedJob(gameID, kind string) int64 {
	e.t.Helper()
	var id int64
	if err := e.store.Pool().QueryRow(e.ctx, `INSERT INTO jobs (host_id, game_id, kind, status, attempt, lease_owner, lease_expires_at, started_at)
		VALUES ($1, $2, $3, 'running', 1, 'test', now() + interval '1 hour', now()) RETURNING id`, e.hostID, gameID, kind).Scan(&id); err != nil {
		e.t.Fatal(err)
	}
	return id
}

func (e *env) kill(id, signal string) {
	e.t.Helper()
	if _, err := e.raw.ContainerKill(e.ctx, id, client.ContainerKillOptions{Signal: signal}); err != nil {
		e.t.Fatalf("kill %s: %v", id, err)
	}
}

func (e *env) get(gameID string) runtime.RuntimeRecord {
	e.t.Helper()
	r, err := e.store.GetRecord(e.ctx, gameID)
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

func (e *env) waitStatus(gameID string, want runtime.Status) runtime.RuntimeRecord {
	e.t.Helper()
	var r runtime.RuntimeRecord
	wait.For(e.t, 2*time.Minute, fmt.Sprintf("record %s %s", gameID, want), func() bool {
		r = e.get(gameID)
		return r.Status == want
	})
	return r
}

// transition is a runtime.* outbox event, decoded.
type transition struct {
	Type outbox.Type
	outbox.RuntimePayload
}

// events returns the runtime.* and container.orphaned events of this
// host, by game, once the outbox holds at least want of them.
func (e *env) events(want int) (map[string][]transition, []outbox.OrphanPayload) {
	e.t.Helper()
	var (
		byGame  map[string][]transition
		orphans []outbox.OrphanPayload
		n       int
	)
	wait.For(e.t, time.Minute, fmt.Sprintf("%d outbox events", want), func() bool {
		evs, err := e.store.ReadOutbox(e.ctx, db.Position{}, 100_000)
		if err != nil {
			e.t.Fatal(err)
		}
		byGame, orphans, n = map[string][]transition{}, nil, 0
		for _, ev := range evs {
			if ev.HostID != e.hostID {
				continue
			}
			switch ev.Type {
			case outbox.TypeContainerOrphaned:
				var o outbox.OrphanPayload
				if err := json.Unmarshal(ev.Payload, &o); err != nil {
					e.t.Fatal(err)
				}
				orphans = append(orphans, o)
			case outbox.TypeRuntimeRunning, outbox.TypeRuntimeStopped, outbox.TypeRuntimeRemoved:
				var p outbox.RuntimePayload
				if err := json.Unmarshal(ev.Payload, &p); err != nil {
					e.t.Fatal(err)
				}
				byGame[ev.GameID] = append(byGame[ev.GameID], transition{Type: ev.Type, RuntimePayload: p})
			default:
				continue
			}
			n++
		}
		return n >= want
	})
	return byGame, orphans
}

// reasons lists the reasons of a game's transitions after its creation.
func reasons(ts []transition) []string {
	var out []string
	for _, t := range ts {
		if t.Reason == outbox.ReasonJobStart {
			continue
		}
		out = append(out, string(t.Reason))
	}
	return out
}
