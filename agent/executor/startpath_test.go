package executor_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/galaxy/rtmanager/agent/engine"
	"github.com/galaxy/rtmanager/internal/domain/job"
	"github.com/galaxy/rtmanager/internal/domain/runtime"
	"github.com/galaxy/rtmanager/internal/testutil/dockertest"
	"github.com/galaxy/rtmanager/internal/testutil/registry"
	"github.com/galaxy/rtmanager/internal/testutil/wait"
)

// startTraced runs one start job of game under a trace of its own and
// returns the spans of that trace once the job's span has ended.
func (e *env) startTraced(game, payload string) (status job.Status, lastErr string, spans []tracetest.SpanStub) {
	e.t.Helper()
	tp, exp := tracing()
	ctx, root := tp.Tracer("bench").Start(context.Background(), "enqueue "+game)
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, carrier)
	root.End()
	var id int64
	err := e.store.Pool().QueryRow(context.Background(),
		`INSERT INTO jobs (host_id, game_id, kind, payload, traceparent) VALUES ($1, $2, 'start', $3::jsonb, $4) RETURNING id`,
		e.hostID, game, payload, carrier["traceparent"]).Scan(&id)
	if err != nil {
		e.t.Fatal(err)
	}
	j := e.finished(id)
	traceID := root.SpanContext().TraceID()
	wait.For(e.t, time.Minute, "the job's span to end", func() bool {
		for _, s := range exp.GetSpans() {
			if s.SpanContext.TraceID() == traceID && s.Name == "job start" {
				return true
			}
		}
		return false
	})
	for _, s := range exp.GetSpans() {
		if s.SpanContext.TraceID() == traceID {
			spans = append(spans, s)
		}
	}
	slices.SortFunc(spans, func(a, b tracetest.SpanStub) int { return a.StartTime.Compare(b.StartTime) })
	return j.Status, j.LastError, spans
}

// dockerCalls returns the Docker API calls among spans, in order, as
// "METHOD /path" with ids and names replaced by placeholders.
func dockerCalls(spans []tracetest.SpanStub) []string {
	var out []string
	for _, s := range spans {
		if s.SpanKind == trace.SpanKindClient && isDockerCall(s.Name) {
			out = append(out, genericPath(s.Name))
		}
	}
	return out
}

func isDockerCall(name string) bool {
	for _, m := range []string{"GET ", "POST ", "DELETE ", "HEAD ", "PUT "} {
		if strings.HasPrefix(name, m) {
			return true
		}
	}
	return false
}

// genericPath turns "POST /v1.41/containers/3f…/start" into
// "POST /containers/{id}/start".
func genericPath(name string) string {
	method, path, _ := strings.Cut(name, " ")
	parts := strings.Split(strings.Trim(path, "/"), "/")
	if len(parts) > 0 && strings.HasPrefix(parts[0], "v1.") {
		parts = parts[1:]
	}
	if len(parts) >= 3 && (parts[0] == "containers" || parts[0] == "images" || parts[0] == "networks") {
		// /containers/{id}/json, /images/{ref…}/json
		parts = []string{parts[0], "{id}", parts[len(parts)-1]}
	}
	return method + " /" + strings.Join(parts, "/")
}

// breakdown formats a start job's spans: the Docker calls and the job's
// own steps, with their durations.
func breakdown(spans []tracetest.SpanStub) string {
	var b strings.Builder
	var job tracetest.SpanStub
	for _, s := range spans {
		if s.Name == "job start" {
			job = s
		}
	}
	for _, s := range spans {
		if s.Name == "job start" || strings.HasPrefix(s.Name, "enqueue ") {
			continue
		}
		if s.SpanKind != trace.SpanKindClient && s.Name != "claim" && !strings.HasPrefix(s.Name, "commit ") {
			continue
		}
		name := s.Name
		if isDockerCall(name) {
			name = genericPath(name)
		}
		fmt.Fprintf(&b, "  +%7.1f ms %7.1f ms  %s\n",
			ms(s.StartTime.Sub(job.StartTime)), ms(s.EndTime.Sub(s.StartTime)), name)
	}
	fmt.Fprintf(&b, "  job span %.1f ms", ms(job.EndTime.Sub(job.StartTime)))
	return b.String()
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// TestStartJobDockerCalls lists the Docker calls of a start job on a
// host where the network and the image are already known (the usual
// case: every start after the first), and logs what each cost. Run with
// -v to see the breakdown.
func TestStartJobDockerCalls(t *testing.T) {
	e := newEnv(t)
	e.run()
	if st, msg, _ := e.startTraced("warm", startPayload(e.image)); st != job.StatusSucceeded {
		t.Fatalf("warm-up start: %s: %s", st, msg)
	}
	st, msg, spans := e.startTraced("second", startPayload(e.image))
	if st != job.StatusSucceeded {
		t.Fatalf("start: %s: %s", st, msg)
	}
	t.Logf("a warm start job:\n%s", breakdown(spans))
	// The network and the image are known; the container is ours because
	// the engine created it. Left: create, start, and the inspect that
	// reads the run's start time. (The commit's look at the container,
	// worker.Result.Check, runs in a trace of its own.)
	want := []string{"POST /containers/create", "POST /containers/{id}/start", "GET /containers/{id}/json"}
	if got := dockerCalls(spans); !slices.Equal(got, want) {
		t.Fatalf("docker calls of a warm start: %q, want %q", got, want)
	}
}

// TestRawBaselineCreatesTheAgentsContainer keeps BenchmarkRawDockerCreateStart
// honest: the container its plain SDK calls create must be the one a start
// job creates. Both are inspected and compared field by field (Config,
// HostConfig, the network aliases), after what must differ (ids, names,
// host id, paths) is replaced by placeholders.
func TestRawBaselineCreatesTheAgentsContainer(t *testing.T) {
	e := newEnv(t)
	e.run()
	e.succeeded(e.insert("same", "start", startPayload(e.image)))
	agentID := e.record("same").CurrentContainerID
	r := newRaw(t)
	rawID := r.createStart(t, r.game(0), 1)

	agent := normalisedInspect(t, e.cli, agentID, e.network, "same", e.hostID)
	baseline := normalisedInspect(t, e.cli, rawID, r.network, r.game(0), r.hostID)
	if agent != baseline {
		t.Fatalf("the raw baseline's container differs from the agent's:\nagent:\n%s\nraw:\n%s", agent, baseline)
	}
}

// normalisedInspect returns the container's Config, HostConfig and aliases
// on netName as indented JSON, with the per-container values replaced.
func normalisedInspect(t *testing.T, cli *client.Client, id, netName, game, hostID string) string {
	t.Helper()
	res, err := cli.ContainerInspect(context.Background(), id, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := res.Container
	if c.State == nil || !c.State.Running {
		t.Fatalf("container %s is not running", id)
	}
	name := runtime.ContainerName(game)
	replace := strings.NewReplacer(id[:12], "{short id}", name, "{name}", netName, "{network}", hostID, "{host}")
	var aliases []string
	if ep := c.NetworkSettings.Networks[netName]; ep != nil {
		for _, a := range ep.Aliases {
			aliases = append(aliases, replace.Replace(a))
		}
	}
	slices.Sort(aliases)
	cfg, hc := *c.Config, *c.HostConfig
	cfg.Hostname = ""
	cfg.Labels = maps.Clone(cfg.Labels)
	cfg.Labels[engine.LabelJob] = "{job}"
	cfg.Labels[engine.LabelGame] = "{game}"
	cfg.Labels[engine.LabelHost] = "{host}"
	hc.Mounts = slices.Clone(hc.Mounts)
	for i := range hc.Mounts {
		hc.Mounts[i].Source = "{state dir}"
	}
	hc.NetworkMode = "{network}"
	out, err := json.MarshalIndent(map[string]any{
		"Name": replace.Replace(c.Name), "Config": cfg, "HostConfig": hc, "Aliases": aliases,
	}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// A start after the network was removed under the agent (which took it to
// stand since its first start) recreates it: the create's "network not
// found" makes the engine look again.
func TestStartAfterNetworkRemoved(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.run()
	e.succeeded(e.insert("first", "start", startPayload(e.image)))
	ctx := context.Background()
	if _, err := e.cli.ContainerRemove(ctx, e.record("first").CurrentContainerID, client.ContainerRemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cli.NetworkRemove(ctx, e.network, client.NetworkRemoveOptions{}); err != nil {
		t.Fatal(err)
	}
	j := e.succeeded(e.insert("second", "start", startPayload(e.image)))
	if j.Attempt != 1 {
		t.Errorf("the start took %d attempts, want 1", j.Attempt)
	}
	c, err := e.cli.ContainerInspect(ctx, e.record("second").CurrentContainerID, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Container.NetworkSettings.Networks[e.network] == nil || !c.Container.State.Running {
		t.Fatalf("the second game's container is not running on %s: %+v", e.network, c.Container.NetworkSettings.Networks)
	}
}

// A stopped game whose network was removed (and so whose container names
// a network that is no more) starts again: the container is created anew
// on the network created again.
func TestStartStoppedGameAfterNetworkRemoved(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.run()
	e.succeeded(e.insert("g", "start", startPayload(e.image)))
	e.succeeded(e.insert("g", "stop", `{}`))
	ctx := context.Background()
	if _, err := e.cli.NetworkRemove(ctx, e.network, client.NetworkRemoveOptions{}); err != nil {
		t.Fatal(err)
	}
	j := e.succeeded(e.insert("g", "start", startPayload(e.image)))
	rec := e.record("g")
	c, err := e.cli.ContainerInspect(ctx, rec.CurrentContainerID, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rec.Status != "running" || c.Container.NetworkSettings.Networks[e.network] == nil || !c.Container.State.Running {
		t.Fatalf("after %d attempts: record %s, container on %v", j.Attempt, rec.Status, c.Container.NetworkSettings.Networks)
	}
	t.Logf("started in %d attempt(s)", j.Attempt)
}

// An image change of a stopped game whose network was removed creates the
// new container on the network made again, in the same attempt: the new
// container cannot start on the network that was, and the change replaces
// it as a start does.
func TestChangeImageAfterNetworkRemoved(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	img := e.healthyImage()
	e.run()
	e.succeeded(e.insert("moved", "start", startPayload(e.image)))
	e.succeeded(e.insert("moved", "stop", `{}`))
	ctx := context.Background()
	if _, err := e.cli.NetworkRemove(ctx, e.network, client.NetworkRemoveOptions{}); err != nil {
		t.Fatal(err)
	}
	j := e.succeeded(e.insert("moved", "change_image", startPayload(img)))
	if j.Attempt != 1 {
		t.Errorf("the image change took %d attempts, want 1", j.Attempt)
	}
	rec := e.record("moved")
	c, err := e.cli.ContainerInspect(ctx, rec.CurrentContainerID, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rec.Status != "running" || rec.CurrentImageRef != img || c.Container.NetworkSettings.Networks[e.network] == nil || !c.Container.State.Running {
		t.Fatalf("after the change: record %s of %s, container on %v", rec.Status, rec.CurrentImageRef, c.Container.NetworkSettings.Networks)
	}
}

// The engine takes an image it made present to stay so. When it goes —
// removed by someone else, or by the agent's own image collection — the
// next start of that image still succeeds, in one attempt, with the image
// pulled again.
func TestStartAfterImageRemoved(t *testing.T) {
	t.Parallel()
	r := registry.Start(t, registry.Options{})
	src := "rtmanager-test-variant:" + dockertest.UniqueName(t)
	dockertest.EngineImageVariant(t, src)
	e := newEnv(t)
	ref, digest := r.Push(t, e.cli, src, "galaxy/removed:v1")
	e.policy.AllowedImages = append(e.policy.AllowedImages, r.Host+"/galaxy/*")
	e.run()
	ctx := context.Background()
	payload := startPayload(ref)

	// gone removes the game's container and the image, with removeImage.
	gone := func(game string, removeImage func() error) {
		t.Helper()
		if _, err := e.cli.ContainerRemove(ctx, e.record(game).CurrentContainerID, client.ContainerRemoveOptions{Force: true}); err != nil {
			t.Fatal(err)
		}
		if err := removeImage(); err != nil {
			t.Fatal(err)
		}
		if _, err := e.cli.ImageInspect(ctx, ref); err == nil {
			t.Fatalf("image %s still present", ref)
		}
	}
	started := func(game string) []string {
		t.Helper()
		st, msg, spans := e.startTraced(game, payload)
		if st != job.StatusSucceeded {
			t.Fatalf("start %s: %s: %s", game, st, msg)
		}
		if rec := e.record(game); rec.CurrentImageDigest != digest {
			t.Fatalf("start %s: record's digest %q, want %s", game, rec.CurrentImageDigest, digest)
		}
		if _, err := e.cli.ImageInspect(ctx, ref); err != nil {
			t.Fatalf("start %s: image %s not present: %v", game, ref, err)
		}
		return dockerCalls(spans)
	}

	started("a") // pulls; the engine now knows the image
	if calls := started("a2"); slices.Contains(calls, "POST /images/create") || slices.Contains(calls, "GET /images/{id}/json") {
		t.Fatalf("a start of a known image asked about it: %q", calls)
	}

	// Removed by someone else: the create finds it missing, the job
	// pulls it and creates again.
	gone("a", func() error {
		if _, err := e.cli.ContainerRemove(ctx, e.record("a2").CurrentContainerID, client.ContainerRemoveOptions{Force: true}); err != nil {
			return err
		}
		_, err := e.cli.ImageRemove(ctx, ref, client.ImageRemoveOptions{Force: true})
		return err
	})
	calls := started("b")
	if n := count(calls, "POST /containers/create"); n != 2 || !slices.Contains(calls, "POST /images/create") {
		t.Errorf("start after an outside removal: want a failed create, a pull, a create; got %q", calls)
	}

	// Removed by the agent's image collection (engine.RemoveImage): the
	// engine forgets the image at once, and the job pulls it before its
	// one create.
	gone("b", func() error {
		_, err := e.eng.RemoveImage(ctx, ref)
		return err
	})
	calls = started("c")
	if n := count(calls, "POST /containers/create"); n != 1 || !slices.Contains(calls, "POST /images/create") {
		t.Errorf("start after the collector's removal: want a pull and one create; got %q", calls)
	}
}

func count(calls []string, call string) int {
	n := 0
	for _, c := range calls {
		if c == call {
			n++
		}
	}
	return n
}
