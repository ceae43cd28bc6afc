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
	got := dockerCalls(spans)
	t.Logf("docker calls: %q", got)
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
	rawID := r.createStart(t, "same-raw", 1)

	agent := normalisedInspect(t, e.cli, agentID, e.network, "same", e.hostID)
	baseline := normalisedInspect(t, e.cli, rawID, r.network, "same-raw", r.hostID)
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
