package engine_test

import (
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/moby/moby/client"

	"github.com/galaxy/rtmanager/agent/engine"
	"github.com/galaxy/rtmanager/internal/testutil/dockertest"
	"github.com/galaxy/rtmanager/internal/testutil/registry"
)

// requests records the Docker API requests an engine sends, as
// "METHOD /path" without the API version.
type requests struct {
	mu  sync.Mutex
	got []string
}

func (r *requests) wrap(next http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		path := req.URL.Path
		if p := strings.SplitN(strings.TrimPrefix(path, "/"), "/", 2); len(p) == 2 && strings.HasPrefix(p[0], "v1.") {
			path = "/" + p[1]
		}
		r.mu.Lock()
		r.got = append(r.got, req.Method+" "+path)
		r.mu.Unlock()
		return next.RoundTrip(req)
	})
}

// take returns the requests since the last take.
func (r *requests) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	got := r.got
	r.got = nil
	return got
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// countingEnv is newEnv on an engine whose requests are recorded.
func countingEnv(t *testing.T) (*env, *requests) {
	t.Helper()
	reqs := &requests{}
	hostID := dockertest.UniqueName(t)
	e := &env{
		t: t, ctx: t.Context(), hostID: hostID,
		d:     dockertest.EngineWith(t, engine.Options{HostID: hostID, WrapTransport: reqs.wrap}),
		raw:   dockertest.Client(t),
		image: dockertest.EngineImage(t),
	}
	e.network = "rtm-" + hostID
	return e, reqs
}

// Once the engine has made sure of a network and an image, a start asks
// the daemon only to create and to start; a container it created is
// started without an ownership inspect, one it did not is inspected.
func TestEngineRemembersNetworkImageAndContainers(t *testing.T) {
	t.Parallel()
	e, reqs := countingEnv(t)
	if err := e.d.EnsureNetwork(e.ctx, e.network); err != nil {
		t.Fatal(err)
	}
	img, err := e.d.EnsureImage(e.ctx, e.image)
	if err != nil {
		t.Fatal(err)
	}
	reqs.take()

	if err := e.d.EnsureNetwork(e.ctx, e.network); err != nil {
		t.Fatal(err)
	}
	again, err := e.d.EnsureImage(e.ctx, e.image)
	if err != nil || again.ID != img.ID || again.Pull.Pulled {
		t.Fatalf("EnsureImage again = %+v, %v; want %s, no pull", again, err, img.ID)
	}
	if got := reqs.take(); len(got) != 0 {
		t.Fatalf("known network and image: requests %q, want none", got)
	}

	c := e.create(e.spec("g1"))
	if err := e.d.StartContainer(e.ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	if got, want := reqs.take(), []string{"POST /containers/create", "POST /containers/" + c.ID + "/start"}; !slices.Equal(got, want) {
		t.Fatalf("create and start: requests %q, want %q", got, want)
	}
	// Started again: the daemon's 304 is success.
	if err := e.d.StartContainer(e.ctx, c.ID); err != nil {
		t.Fatalf("start a running container: %v", err)
	}
	if ci := e.inspect(c.ID); !ci.Running {
		t.Fatalf("container %s is %s", c.ID, ci.State)
	}

	// Created by another engine of the same host id (an earlier agent
	// process): inspected before the start.
	other := dockertest.Engine(t, e.hostID)
	oc, err := other.CreateContainer(e.ctx, e.spec("g2"))
	if err != nil {
		t.Fatal(err)
	}
	reqs.take()
	if err := e.d.StartContainer(e.ctx, oc.ID); err != nil {
		t.Fatal(err)
	}
	if got := reqs.take(); !slices.Contains(got, "GET /containers/"+oc.ID+"/json") {
		t.Fatalf("start of a container another engine created: requests %q, want its inspect", got)
	}
	// And one that is not ours is still refused.
	foreign := dockertest.CreateUnmanaged(t, "unmanaged-"+e.hostID, e.image, nil)
	if err := e.d.StartContainer(e.ctx, foreign); !errors.Is(err, engine.ErrNotManaged) {
		t.Fatalf("start an unmanaged container: %v, want ErrNotManaged", err)
	}
}

// A network removed under the engine: the start of a container that
// names it fails with ErrNetworkMissing, and the engine, which forgot
// the network, creates it again on the next EnsureNetwork.
func TestEngineForgetsRemovedNetwork(t *testing.T) {
	t.Parallel()
	e, reqs := countingEnv(t)
	if err := e.d.EnsureNetwork(e.ctx, e.network); err != nil {
		t.Fatal(err)
	}
	reqs.take()
	if _, err := e.raw.NetworkRemove(e.ctx, e.network, client.NetworkRemoveOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := e.d.EnsureNetwork(e.ctx, e.network); err != nil {
		t.Fatal(err)
	}
	if got := reqs.take(); slices.Contains(got, "POST /networks/create") {
		t.Fatalf("EnsureNetwork looked again without a reason: %q", got)
	}
	c := e.create(e.spec("g1"))
	if err := e.d.StartContainer(e.ctx, c.ID); !errors.Is(err, engine.ErrNetworkMissing) {
		t.Fatalf("start on a removed network: %v, want ErrNetworkMissing", err)
	}
	if err := e.d.EnsureNetwork(e.ctx, e.network); err != nil {
		t.Fatal(err)
	}
	if _, err := e.raw.NetworkInspect(e.ctx, e.network, client.NetworkInspectOptions{}); err != nil {
		t.Fatalf("the network was not created again: %v", err)
	}
}

// "latest" is pulled every time, whatever the engine remembers; another
// tag once.
func TestEngineAlwaysPullsLatest(t *testing.T) {
	t.Parallel()
	r := registry.Start(t, registry.Options{})
	latest, _ := pushUnique(t, r, "galaxy/engine:latest")
	pinned, _ := pushUnique(t, r, "galaxy/engine:v7")
	d := pullEngine(t, dockerConfig(t, `{}`), engine.Options{})
	for range 3 {
		for _, ref := range []string{latest, pinned} {
			if _, err := d.EnsureImage(t.Context(), ref); err != nil {
				t.Fatalf("EnsureImage(%s): %v", ref, err)
			}
		}
	}
	if n := engine.PullRequests(d); n != 3+1 {
		t.Fatalf("pull requests: %d, want 3 (latest, every time) + 1 (v7, once)", n)
	}
}
