package engine_test

// What differs between the Docker versions the agent supports (20.10, API
// 1.41, to 26.1, API 1.45; CI runs these tests against both), checked
// here rather than assumed: the negotiated API version, the attributes of
// die and oom events (26.1 adds execDuration to die), and what inspect
// reports after an exit and an out-of-memory kill. Network duplicates are
// in TestEnsureNetworkRemovesDuplicates (refused from API 1.44), the DNS
// alias in TestContainerLifecycle (20.10 also lists the short id among the
// aliases; 26.1 lists it in DNSNames instead).

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"
	"github.com/moby/moby/client/pkg/versions"

	"github.com/galaxy/rtmanager/agent/engine"
	"github.com/galaxy/rtmanager/internal/testutil/dockertest"
	"github.com/galaxy/rtmanager/internal/testutil/wait"
)

// TestNegotiatesTheDaemonsAPIVersion: the engine speaks the daemon's API
// version when it is older than the SDK's, the SDK's own otherwise.
func TestNegotiatesTheDaemonsAPIVersion(t *testing.T) {
	t.Parallel()
	d := dockertest.Engine(t, dockertest.UniqueName(t))
	if err := d.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
	v, err := dockertest.Client(t).ServerVersion(t.Context(), client.ServerVersionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := v.APIVersion
	if versions.LessThan(client.MaxAPIVersion, want) {
		want = client.MaxAPIVersion
	}
	if got := d.APIVersion(); got != want {
		t.Errorf("negotiated API %s with Docker %s (API %s); want %s", got, v.Version, v.APIVersion, want)
	}
	if versions.LessThan(d.APIVersion(), client.MinAPIVersion) {
		t.Errorf("negotiated API %s is below the SDK's minimum %s", d.APIVersion(), client.MinAPIVersion)
	}
	t.Logf("Docker %s, API %s (min %s); the engine speaks %s", v.Version, v.APIVersion, v.MinAPIVersion, d.APIVersion())
}

// TestDeathEventsAndInspect: an engine that exits by itself with code 3
// and one killed for want of memory give the die (and oom) events and the
// inspect results the watcher and the reconciler read.
func TestDeathEventsAndInspect(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	info, err := e.raw.Info(e.ctx, client.InfoOptions{})
	if err != nil {
		t.Fatal(err)
	}

	var (
		mu  sync.Mutex
		got []engine.Event
	)
	since := time.Now().Add(-time.Second).UnixNano()
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan error, 1)
	go func() {
		done <- e.d.Events(ctx, engine.EventsOptions{SinceNano: since}, func(ev engine.Event) {
			mu.Lock()
			got = append(got, ev)
			mu.Unlock()
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Events after cancel: %v", err)
		}
	})
	eventsOf := func(id string) []engine.Event {
		mu.Lock()
		defer mu.Unlock()
		return slices.DeleteFunc(slices.Clone(got), func(ev engine.Event) bool { return ev.ID != id })
	}
	dieOf := func(id string) (engine.Event, bool) {
		evs := eventsOf(id)
		i := slices.IndexFunc(evs, func(ev engine.Event) bool { return ev.Action == "die" })
		if i < 0 {
			return engine.Event{}, false
		}
		return evs[i], true
	}

	quitter := e.create(e.spec("quitter", "ENGINE_EXIT_AFTER=10ms", "ENGINE_EXIT_CODE=3"))
	hogSpec := e.spec("hog", "ENGINE_ALLOC_MB=256")
	hogSpec.MemoryBytes = 32 << 20
	hog := e.create(hogSpec)
	for _, c := range []engine.Container{quitter, hog} {
		if err := e.d.StartContainer(e.ctx, c.ID); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []engine.Container{quitter, hog} {
		wait.For(t, time.Minute, "die event of "+c.Name, func() bool { _, ok := dieOf(c.ID); return ok })
	}

	die, _ := dieOf(quitter.ID)
	if code, ok := die.ExitCode(); !ok || code != 3 {
		t.Errorf("die of the quitter: exit code %d, %v; want 3 (attributes %v)", code, ok, die.Attributes)
	}
	if die.GameID() != "quitter" || die.Attributes[engine.LabelHost] != e.hostID || die.TimeNano < since {
		t.Errorf("die of the quitter: %+v", die)
	}
	if c := e.inspect(quitter.ID); c.State != "exited" || c.ExitCode != 3 || c.OOMKilled || c.FinishedAt.Before(c.StartedAt) {
		t.Errorf("inspect of the quitter: %+v", c)
	}

	// hogDied checks a hog's death and reports whether the daemon said it
	// was the OOM killer, in an event and in the inspect.
	hogDied := func(hog engine.Container) (oom, oomKilled bool) {
		t.Helper()
		die, _ := dieOf(hog.ID)
		if code, ok := die.ExitCode(); !ok || code != 137 {
			t.Errorf("die of %s: exit code %d, %v; want 137 (attributes %v)", hog.Name, code, ok, die.Attributes)
		}
		c := e.inspect(hog.ID)
		if c.State != "exited" || c.ExitCode != 137 {
			t.Errorf("inspect of %s: %+v", hog.Name, c)
		}
		oom = slices.ContainsFunc(eventsOf(hog.ID), func(ev engine.Event) bool { return ev.Action == "oom" })
		t.Logf("Docker %s, cgroup v%s: die attributes %v; oom event %v, OOMKilled %v",
			info.Info.ServerVersion, info.Info.CgroupVersion, slices.Sorted(maps.Keys(die.Attributes)), oom, c.OOMKilled)
		return oom, c.OOMKilled
	}
	oom, oomKilled := hogDied(hog)
	// cgroup v2 does not always tell the daemon (see Container.OOMKilled).
	// cgroup v1 does, but containerd's shim can send the task's exit before
	// its OOM event, and the daemon then records no OOM (containerd 1.7.24
	// did, once, in CI; containerd#12714 orders the two). Another hog or two
	// tell a lost signal from one we do not read.
	for try := 2; info.Info.CgroupVersion == "1" && (!oom || !oomKilled) && try <= 3; try++ {
		spec := hogSpec
		spec.Name = fmt.Sprintf("%s-%d", hogSpec.Name, try)
		again := e.create(spec)
		if err := e.d.StartContainer(e.ctx, again.ID); err != nil {
			t.Fatal(err)
		}
		wait.For(t, time.Minute, "die event of "+again.Name, func() bool { _, ok := dieOf(again.ID); return ok })
		oom, oomKilled = hogDied(again)
	}
	if info.Info.CgroupVersion == "1" && (!oom || !oomKilled) {
		t.Errorf("cgroup v1: oom event %v, OOMKilled %v after three hogs; want both", oom, oomKilled)
	}
}
