package engine_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/galaxy/rtmanager/agent/engine"
	"github.com/galaxy/rtmanager/internal/testutil/dockertest"
	"github.com/galaxy/rtmanager/internal/testutil/wait"
)

// env is one test's view of the real daemon: its own host id (so its
// containers and events are its own), network and image.
type env struct {
	t       *testing.T
	ctx     context.Context
	hostID  string
	d       *engine.Docker
	raw     *client.Client
	image   string
	network string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	hostID := dockertest.UniqueName(t)
	e := &env{
		t:      t,
		ctx:    t.Context(),
		hostID: hostID,
		d:      dockertest.Engine(t, hostID),
		raw:    dockertest.Client(t),
		image:  dockertest.EngineImage(t),
	}
	e.network = "rtm-" + hostID
	if err := e.d.EnsureNetwork(e.ctx, e.network); err != nil {
		t.Fatalf("EnsureNetwork: %v", err)
	}
	return e
}

func (e *env) spec(game string, envv ...string) engine.ContainerSpec {
	return engine.ContainerSpec{
		GameID:      game,
		JobID:       42,
		Name:        "galaxy-game-" + game + "-" + e.hostID,
		Image:       e.image,
		Env:         append([]string{"GAME_ID=" + game}, envv...),
		StatePath:   e.t.TempDir(),
		Network:     e.network,
		MemoryBytes: 64 << 20,
		NanoCPUs:    500_000_000,
		PidsLimit:   64,
	}
}

func (e *env) create(spec engine.ContainerSpec) engine.Container {
	e.t.Helper()
	c, err := e.d.CreateContainer(e.ctx, spec)
	if err != nil {
		e.t.Fatalf("CreateContainer: %v", err)
	}
	return c
}

func (e *env) inspect(id string) engine.Container {
	e.t.Helper()
	c, err := e.d.InspectContainer(e.ctx, id)
	if err != nil {
		e.t.Fatalf("InspectContainer(%s): %v", id, err)
	}
	return c
}

// startReady starts c and waits until the engine reports, through the file
// it writes into its state directory, that its signal handling is set up:
// a stop sent earlier would hit the Go runtime's default SIGTERM action.
func (e *env) startReady(c engine.Container, statePath string, start func() error) {
	e.t.Helper()
	file := filepath.Join(statePath, "engine-started")
	if err := os.Remove(file); err != nil && !errors.Is(err, os.ErrNotExist) {
		e.t.Fatal(err)
	}
	if err := start(); err != nil {
		e.t.Fatalf("start %s: %v", c.Name, err)
	}
	wait.ForErr(e.t, time.Minute, "engine "+c.Name+" ready", func() (bool, error) {
		_, err := os.Stat(file)
		return err == nil, err
	})
}

func (e *env) waitState(id, state string) engine.Container {
	e.t.Helper()
	var c engine.Container
	wait.ForErr(e.t, time.Minute, "container "+id+" "+state, func() (bool, error) {
		var err error
		c, err = e.d.InspectContainer(e.ctx, id)
		return err == nil && c.State == state, err
	})
	return c
}

func TestContainerLifecycle(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if err := e.d.EnsureNetwork(e.ctx, e.network); err != nil {
		t.Fatalf("EnsureNetwork again: %v", err)
	}
	if img, err := e.d.EnsureImage(e.ctx, e.image); err != nil || img.Pull.Pulled || img.ID == "" {
		t.Fatalf("EnsureImage(present) = %+v, %v; want the local image, no pull", img, err)
	}

	spec := e.spec("g1")
	c := e.create(spec)

	// What we asked for, as the daemon reports it.
	if c.Name != spec.Name || c.Image != spec.Image || c.GameID != "g1" || c.HostID != e.hostID || c.JobID != 42 {
		t.Errorf("created container = %+v", c)
	}
	if c.State != "created" || c.Running || !c.StartedAt.IsZero() {
		t.Errorf("created container state = %+v", c)
	}
	// The create is not inspected; the daemon's view has the rest.
	if ci := e.inspect(c.ID); ci.State != "created" || ci.Image != spec.Image || ci.CreatedAt.IsZero() || !strings.HasPrefix(ci.ImageID, "sha256:") {
		t.Errorf("created container, inspected = %+v", ci)
	}
	wantLabels := map[string]string{
		engine.LabelManaged: "true", engine.LabelHost: e.hostID,
		engine.LabelGame: "g1", engine.LabelJob: "42",
	}
	for k, v := range wantLabels {
		if c.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, c.Labels[k], v)
		}
	}
	raw, err := e.raw.ContainerInspect(e.ctx, c.ID, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	hc := raw.Container.HostConfig
	if hc.Privileged || !slices.Equal(hc.CapDrop, []string{"ALL"}) || len(hc.CapAdd) != 0 ||
		!slices.Contains(hc.SecurityOpt, "no-new-privileges") {
		t.Errorf("security: privileged=%v capdrop=%v capadd=%v secopt=%v", hc.Privileged, hc.CapDrop, hc.CapAdd, hc.SecurityOpt)
	}
	if hc.PidMode.IsHost() || hc.IpcMode.IsHost() || hc.NetworkMode.IsHost() || hc.UTSMode.IsHost() {
		t.Errorf("host namespace: pid=%q ipc=%q net=%q uts=%q", hc.PidMode, hc.IpcMode, hc.NetworkMode, hc.UTSMode)
	}
	if hc.Memory != spec.MemoryBytes || hc.MemorySwap != spec.MemoryBytes || hc.NanoCPUs != spec.NanoCPUs ||
		hc.PidsLimit == nil || *hc.PidsLimit != spec.PidsLimit {
		t.Errorf("limits: mem=%d swap=%d cpu=%d pids=%v", hc.Memory, hc.MemorySwap, hc.NanoCPUs, hc.PidsLimit)
	}
	if hc.RestartPolicy.Name != "no" {
		t.Errorf("restart policy = %q", hc.RestartPolicy.Name)
	}
	if len(hc.Mounts) != 1 || hc.Mounts[0].Type != "bind" || hc.Mounts[0].Source != spec.StatePath || hc.Mounts[0].Target != "/state" {
		t.Errorf("mounts = %+v", hc.Mounts)
	}
	if string(hc.NetworkMode) != e.network {
		t.Errorf("network mode = %q", hc.NetworkMode)
	}
	if ep := raw.Container.NetworkSettings.Networks[e.network]; ep == nil || !slices.Contains(ep.Aliases, spec.Name) {
		t.Errorf("endpoint on %s = %+v, want alias %s", e.network, ep, spec.Name)
	}
	if !slices.Contains(raw.Container.Config.Env, "GAME_ID=g1") {
		t.Errorf("env = %v", raw.Container.Config.Env)
	}

	// Start (twice: idempotent) and observe it running.
	e.startReady(c, spec.StatePath, func() error { return e.d.StartContainer(e.ctx, c.ID) })
	if err := e.d.StartContainer(e.ctx, c.ID); err != nil {
		t.Fatalf("StartContainer again: %v", err)
	}
	running := e.inspect(spec.Name) // by name
	if !running.Running || running.State != "running" || running.ID != c.ID || running.StartedAt.IsZero() {
		t.Errorf("after start: %+v", running)
	}
	list, err := e.d.ListManaged(e.ctx)
	if err != nil {
		t.Fatalf("ListManaged: %v", err)
	}
	if len(list) != 1 || list[0].ID != c.ID || !list[0].Running {
		t.Errorf("ListManaged = %+v", list)
	}
	// The engine wrote into the bind-mounted state directory.
	if b, err := os.ReadFile(filepath.Join(spec.StatePath, "engine-started")); err != nil || !strings.Contains(string(b), "game_id=g1") {
		t.Errorf("state file: %q, %v", b, err)
	}

	// A retried create adopts the container instead of failing.
	again := e.create(spec)
	if again.ID != c.ID || !again.Running {
		t.Errorf("second create = %s running=%v, want adoption of %s", again.ID, again.Running, c.ID)
	}

	// Restart gives a new start time.
	e.startReady(c, spec.StatePath, func() error { return e.d.RestartContainer(e.ctx, c.ID, 10*time.Second) })
	restarted := e.inspect(c.ID)
	if !restarted.Running || !restarted.StartedAt.After(running.StartedAt) {
		t.Errorf("after restart: running=%v started %v (before %v)", restarted.Running, restarted.StartedAt, running.StartedAt)
	}

	// Graceful stop: the engine exits 0 on SIGTERM. Stopping again is fine.
	for range 2 {
		if err := e.d.StopContainer(e.ctx, c.ID, 30*time.Second); err != nil {
			t.Fatalf("StopContainer: %v", err)
		}
	}
	stopped := e.inspect(c.ID)
	if stopped.Running || stopped.State != "exited" || stopped.ExitCode != 0 || stopped.FinishedAt.IsZero() {
		t.Errorf("after stop: %+v", stopped)
	}
	if list, _ := e.d.ListManaged(e.ctx); len(list) != 1 || list[0].State != "exited" {
		t.Errorf("ListManaged after stop = %+v", list)
	}

	// Remove, twice.
	for range 2 {
		if err := e.d.RemoveContainer(e.ctx, c.ID); err != nil {
			t.Fatalf("RemoveContainer: %v", err)
		}
	}
	if _, err := e.d.InspectContainer(e.ctx, c.ID); !errors.Is(err, engine.ErrNotFound) {
		t.Errorf("inspect after remove: %v, want ErrNotFound", err)
	}
	if err := e.d.StartContainer(e.ctx, c.ID); !errors.Is(err, engine.ErrNotFound) {
		t.Errorf("start after remove: %v, want ErrNotFound", err)
	}
	if err := e.d.StopContainer(e.ctx, c.ID, time.Second); !errors.Is(err, engine.ErrNotFound) {
		t.Errorf("stop after remove: %v, want ErrNotFound", err)
	}
	if list, _ := e.d.ListManaged(e.ctx); len(list) != 0 {
		t.Errorf("ListManaged after remove = %+v", list)
	}
	if _, err := os.Stat(filepath.Join(spec.StatePath, "engine-started")); err != nil {
		t.Errorf("state directory lost its file after remove: %v", err)
	}
}

func TestStopTimeoutKills(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	spec := e.spec("stubborn", "ENGINE_IGNORE_SIGTERM=1")
	c := e.create(spec)
	e.startReady(c, spec.StatePath, func() error { return e.d.StartContainer(e.ctx, c.ID) })
	if err := e.d.StopContainer(e.ctx, c.ID, time.Second); err != nil {
		t.Fatalf("StopContainer: %v", err)
	}
	got := e.inspect(c.ID)
	if got.State != "exited" || got.ExitCode != 137 {
		t.Errorf("after stop of a SIGTERM-ignoring engine: state=%s exit=%d, want exited 137", got.State, got.ExitCode)
	}
}

func TestEngineExitsByItself(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.create(e.spec("quitter", "ENGINE_EXIT_AFTER=10ms", "ENGINE_EXIT_CODE=3"))
	if err := e.d.StartContainer(e.ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	got := e.waitState(c.ID, "exited")
	if got.ExitCode != 3 || got.OOMKilled {
		t.Errorf("exit=%d oom=%v, want 3 false", got.ExitCode, got.OOMKilled)
	}
}

func TestRefusesForeignContainers(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	plain := e.spec("plain")
	otherHost := e.spec("otherhost")
	plainID := dockertest.CreateUnmanaged(t, plain.Name, e.image, nil)
	otherID := dockertest.CreateUnmanaged(t, otherHost.Name, e.image, map[string]string{
		engine.LabelManaged: "true", engine.LabelHost: "someone-else", engine.LabelGame: "otherhost",
	})

	for _, tc := range []struct {
		spec engine.ContainerSpec
		id   string
	}{{plain, plainID}, {otherHost, otherID}} {
		if _, err := e.d.CreateContainer(e.ctx, tc.spec); !errors.Is(err, engine.ErrNotManaged) {
			t.Errorf("create over %s: %v, want ErrNotManaged", tc.spec.Name, err)
		}
		for _, ref := range []string{tc.id, tc.spec.Name} {
			checks := map[string]error{
				"start":   e.d.StartContainer(e.ctx, ref),
				"stop":    e.d.StopContainer(e.ctx, ref, time.Second),
				"restart": e.d.RestartContainer(e.ctx, ref, time.Second),
				"remove":  e.d.RemoveContainer(e.ctx, ref),
			}
			_, checks["inspect"] = e.d.InspectContainer(e.ctx, ref)
			for op, err := range checks {
				if !errors.Is(err, engine.ErrNotManaged) {
					t.Errorf("%s %s: %v, want ErrNotManaged", op, ref, err)
				}
			}
		}
		// Untouched: still there, never started.
		raw, err := e.raw.ContainerInspect(e.ctx, tc.id, client.ContainerInspectOptions{})
		if err != nil {
			t.Fatalf("foreign container %s is gone: %v", tc.spec.Name, err)
		}
		if raw.Container.State.Status != "created" {
			t.Errorf("foreign container %s state = %s, want created", tc.spec.Name, raw.Container.State.Status)
		}
	}
	if list, err := e.d.ListManaged(e.ctx); err != nil || len(list) != 0 {
		t.Errorf("ListManaged = %+v, %v; want none", list, err)
	}

	// Ours, but for another game: a name conflict, not an adoption.
	ours := e.create(e.spec("mine"))
	clash := e.spec("intruder")
	clash.Name = ours.Name
	if _, err := e.d.CreateContainer(e.ctx, clash); !errors.Is(err, engine.ErrNameConflict) {
		t.Errorf("create for another game under our name: %v, want ErrNameConflict", err)
	}
}

func TestEvents(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	var (
		mu  sync.Mutex
		got []engine.Event
	)
	since := time.Now().Add(-time.Second).UnixNano() // replay covers the subscribe race
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan error, 1)
	go func() {
		done <- e.d.Events(ctx, engine.EventsOptions{
			SinceNano: since,
			Actions:   []string{"create", "start", "die", "stop", "destroy"},
		}, func(ev engine.Event) {
			mu.Lock()
			got = append(got, ev)
			mu.Unlock()
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Events after cancel: %v, want context.Canceled", err)
		}
	})

	lifecycle := func(id string) {
		t.Helper()
		if _, err := e.raw.ContainerStart(e.ctx, id, client.ContainerStartOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.raw.ContainerRemove(e.ctx, id, client.ContainerRemoveOptions{Force: true}); err != nil {
			t.Fatal(err)
		}
	}
	// Foreign containers first: the stream is ordered, so once our own
	// destroy has arrived, theirs would have too.
	plainID := dockertest.CreateUnmanaged(t, "plain-"+e.hostID, e.image, nil)
	otherID := dockertest.CreateUnmanaged(t, "other-"+e.hostID, e.image, map[string]string{
		engine.LabelManaged: "true", engine.LabelHost: "someone-else",
	})
	lifecycle(plainID)
	lifecycle(otherID)

	spec := e.spec("watched")
	c := e.create(spec)
	e.startReady(c, spec.StatePath, func() error { return e.d.StartContainer(e.ctx, c.ID) })
	if err := e.d.StopContainer(e.ctx, c.ID, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := e.d.RemoveContainer(e.ctx, c.ID); err != nil {
		t.Fatal(err)
	}

	snapshot := func() []engine.Event {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
	wait.ForErr(t, time.Minute, "destroy event", func() (bool, error) {
		return slices.ContainsFunc(snapshot(), func(ev engine.Event) bool { return ev.ID == c.ID && ev.Action == "destroy" }), nil
	})

	var actions []string
	for _, ev := range snapshot() {
		if ev.ID != c.ID {
			t.Errorf("event for a container that is not ours: %+v", ev)
			continue
		}
		if ev.TimeNano < since || ev.GameID() != "watched" || ev.Attributes[engine.LabelHost] != e.hostID {
			t.Errorf("event fields: %+v", ev)
		}
		if ev.Action == "die" {
			if code, ok := ev.ExitCode(); !ok || code != 0 {
				t.Errorf("die exit code = %d, %v; want 0", code, ok)
			}
		}
		if len(actions) == 0 || actions[len(actions)-1] != ev.Action { // since-replay may duplicate
			actions = append(actions, ev.Action)
		}
	}
	// stop and die may come in either order.
	for _, want := range []string{"create", "start", "die", "stop", "destroy"} {
		if !slices.Contains(actions, want) {
			t.Errorf("actions %v lack %q", actions, want)
		}
	}
	if actions[0] != "create" || actions[1] != "start" || actions[len(actions)-1] != "destroy" {
		t.Errorf("actions out of order: %v", actions)
	}
}

// TestEnsureNetworkRemovesDuplicates: two managed networks share the name
// (Docker before API 1.44 allows it, and a name then no longer resolves);
// EnsureNetwork keeps the oldest and removes the other.
func TestEnsureNetworkRemovesDuplicates(t *testing.T) {
	t.Parallel()
	hostID := dockertest.UniqueName(t)
	d := dockertest.Engine(t, hostID)
	raw := dockertest.Client(t)
	name := "rtm-dup-" + hostID
	labels := map[string]string{engine.LabelManaged: "true", engine.LabelHost: hostID}
	first, err := raw.NetworkCreate(t.Context(), name, client.NetworkCreateOptions{Driver: "bridge", Labels: labels})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.NetworkCreate(t.Context(), name, client.NetworkCreateOptions{Driver: "bridge", Labels: labels}); err != nil {
		// A daemon of API 1.44 or later refuses the duplicate: the case
		// cannot arise there.
		t.Logf("the daemon refuses duplicate network names: %v", err)
	}
	if err := d.EnsureNetwork(t.Context(), name); err != nil {
		t.Fatal(err)
	}
	list, err := raw.NetworkList(t.Context(), client.NetworkListOptions{Filters: make(client.Filters).Add("name", name)})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, nw := range list.Items {
		if nw.Name == name {
			ids = append(ids, nw.ID)
		}
	}
	if len(ids) != 1 || ids[0] != first.ID {
		t.Fatalf("networks named %s: %v, want only the first, %s", name, ids, first.ID)
	}
}

func TestEnsureNetworkConcurrent(t *testing.T) {
	t.Parallel()
	hostID := dockertest.UniqueName(t)
	name := "rtm-race-" + hostID
	// Separate engines: the in-process lock does not help them, the
	// post-create convergence must.
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for range 6 {
		d := dockertest.Engine(t, hostID)
		wg.Go(func() { errs <- d.EnsureNetwork(t.Context(), name) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("EnsureNetwork: %v", err)
		}
	}
	// Two creators that listed before each other's create was visible may
	// both have kept theirs; the next call converges.
	if err := dockertest.Engine(t, hostID).EnsureNetwork(t.Context(), name); err != nil {
		t.Fatal(err)
	}
	raw := dockertest.Client(t)
	list, err := raw.NetworkList(t.Context(), client.NetworkListOptions{Filters: make(client.Filters).Add("name", name)})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, nw := range list.Items {
		if nw.Name == name {
			n++
			if nw.Labels[engine.LabelManaged] != "true" || nw.Labels[engine.LabelHost] != hostID || nw.Driver != "bridge" {
				t.Errorf("network %+v", nw)
			}
		}
	}
	if n != 1 {
		t.Errorf("%d networks named %s, want 1", n, name)
	}
}

func TestEnsureImagePullError(t *testing.T) {
	t.Parallel()
	d := dockertest.Engine(t, dockertest.UniqueName(t))
	// A registry on a closed loopback port: the pull fails at once, without
	// leaving the machine.
	ref := "127.0.0.1:1/rtmanager/missing:nope"
	img, err := d.EnsureImage(t.Context(), ref)
	if err == nil || !strings.Contains(err.Error(), ref) {
		t.Fatalf("EnsureImage(%s) = %v, want an error naming the ref", ref, err)
	}
	// Unreachable is not "not found": it is worth another try.
	if errors.Is(err, engine.ErrImageNotFound) || errors.Is(err, engine.ErrRegistryAuth) || img.Pull.Attempts != engine.DefaultPullAttempts {
		t.Fatalf("EnsureImage(%s) = %+v, %v; want %d attempts and a transient error", ref, img.Pull, err, engine.DefaultPullAttempts)
	}
}

func TestCreateMissingImage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	spec := e.spec("noimage")
	spec.Image = "rtmanager-test-missing:" + e.hostID
	if _, err := e.d.CreateContainer(e.ctx, spec); !errors.Is(err, engine.ErrNotFound) {
		t.Errorf("create with a missing image: %v, want ErrNotFound", err)
	}
}
