package rtmclient_test

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/trace"

	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/domain/job"
	"github.com/galaxy/rtmanager/internal/domain/outbox"
	"github.com/galaxy/rtmanager/internal/domain/runtime"
	"github.com/galaxy/rtmanager/internal/testutil/pgtest"
	"github.com/galaxy/rtmanager/internal/testutil/wait"
	"github.com/galaxy/rtmanager/rtmclient"
)

func newClient(t *testing.T) *rtmclient.Client {
	t.Helper()
	return rtmclient.New(pgtest.Pool(t))
}

func countJobs(t *testing.T, c *rtmclient.Client) int {
	t.Helper()
	var n int
	if err := c.Pool().QueryRow(context.Background(), "SELECT count(*) FROM jobs").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestEnqueueCommitsWithTheCallersTransaction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newClient(t)
	if _, err := c.Pool().Exec(ctx, "CREATE TABLE gm_games (id text PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	req := rtmclient.JobRequest{HostID: "host-a", GameID: "g1", Payload: rtmclient.StartPayload{ImageRef: "engine:1"}}

	rollback := errors.New("the Game Master changed its mind")
	err := pgx.BeginFunc(ctx, c.Pool(), func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO gm_games VALUES ('g1')"); err != nil {
			return err
		}
		if _, _, err := c.Enqueue(ctx, tx, req); err != nil {
			return err
		}
		return rollback
	})
	if !errors.Is(err, rollback) {
		t.Fatal(err)
	}
	if n := countJobs(t, c); n != 0 {
		t.Fatalf("rolled back: %d jobs, want none", n)
	}

	err = pgx.BeginFunc(ctx, c.Pool(), func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO gm_games VALUES ('g1')"); err != nil {
			return err
		}
		_, _, err := c.Enqueue(ctx, tx, req)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	js, err := c.ListJobs(ctx, rtmclient.JobFilter{GameID: "g1"})
	if err != nil || len(js) != 1 || js[0].Status != rtmclient.JobQueued {
		t.Fatalf("committed: %+v, %v", js, err)
	}
	var p rtmclient.StartPayload
	if err := json.Unmarshal(js[0].Payload, &p); err != nil || p.ImageRef != "engine:1" {
		t.Fatalf("payload %s: %v", js[0].Payload, err)
	}
}

func TestEnqueueValidatesBeforeInsert(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newClient(t)
	five := 5
	ok := rtmclient.JobRequest{HostID: "host-a", GameID: "g1", Payload: rtmclient.StopPayload{TimeoutSeconds: &five}}
	cases := []struct {
		name  string
		req   func(r *rtmclient.JobRequest)
		field string
	}{
		{"no host", func(r *rtmclient.JobRequest) { r.HostID = " " }, "host_id"},
		{"no payload", func(r *rtmclient.JobRequest) { r.Payload = nil }, "payload"},
		{"bad game id", func(r *rtmclient.JobRequest) { r.GameID = "../etc" }, "game_id"},
		{"unknown kind", func(r *rtmclient.JobRequest) { r.Payload = rtmclient.RawPayload{JobKind: "explode"} }, "kind"},
		{"unknown field", func(r *rtmclient.JobRequest) {
			r.Payload = rtmclient.RawPayload{JobKind: rtmclient.KindStop, JSON: json.RawMessage(`{"timeout":3}`)}
		}, `"timeout"`},
		{"bad image", func(r *rtmclient.JobRequest) { r.Payload = rtmclient.StartPayload{ImageRef: "engine:bad tag"} }, "image_ref"},
		{"state dir escape", func(r *rtmclient.JobRequest) {
			r.Payload = rtmclient.StartPayload{ImageRef: "engine:1", StateDir: "../x"}
		}, "state_dir"},
		{"another game's state dir", func(r *rtmclient.JobRequest) {
			r.Payload = rtmclient.StartPayload{ImageRef: "engine:1", StateDir: "g2/saves"}
		}, "state_dir"},
		{"limits", func(r *rtmclient.JobRequest) {
			r.Payload = rtmclient.ChangeImagePayload{ImageRef: "engine:2", Limits: rtmclient.Limits{MemoryBytes: 1}}
		}, "limits.memory_bytes"},
		{"attempts", func(r *rtmclient.JobRequest) { r.MaxAttempts = 101 }, "max_attempts"},
		{"health check without a command", func(r *rtmclient.JobRequest) {
			r.Payload = rtmclient.StartPayload{ImageRef: "engine:1", Healthcheck: &rtmclient.Healthcheck{IntervalMillis: 1000}}
		}, "healthcheck.command"},
		{"ready timeout", func(r *rtmclient.JobRequest) {
			zero := 0
			r.Payload = rtmclient.RestartPayload{ReadyTimeoutSeconds: &zero}
		}, "ready_timeout_seconds"},
	}
	for _, tc := range cases {
		req := ok
		tc.req(&req)
		_, _, err := c.Enqueue(ctx, c.Pool(), req)
		var ve *rtmclient.ValidationError
		if !errors.Is(err, rtmclient.ErrInvalidJob) || !errors.As(err, &ve) || ve.Field != tc.field {
			t.Errorf("%s: got %v, want a validation error on %s", tc.name, err, tc.field)
		}
	}
	if n := countJobs(t, c); n != 0 {
		t.Fatalf("%d jobs inserted by refused requests", n)
	}
	// A health check and a ready timeout within their bounds pass.
	ninety := 90
	if _, _, err := c.Enqueue(ctx, c.Pool(), rtmclient.JobRequest{HostID: "h", GameID: "g3",
		Payload: rtmclient.ChangeImagePayload{ImageRef: "engine:2", ReadyTimeoutSeconds: &ninety,
			Healthcheck: &rtmclient.Healthcheck{Command: []string{"/engine", "healthcheck"}, IntervalMillis: 500, Retries: 3}}}); err != nil {
		t.Fatal(err)
	}
	// Any well-formed image passes: the allow-list is the agent's.
	if _, _, err := c.Enqueue(ctx, c.Pool(), rtmclient.JobRequest{HostID: "h", GameID: "g2",
		Payload: rtmclient.StartPayload{ImageRef: "registry.example.com/x/y@sha256:" + strings.Repeat("a", 64)}}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Enqueue(ctx, c.Pool(), ok); err != nil {
		t.Fatal(err)
	}
}

func TestEnqueueWritesTheTraceparentAndIdempotency(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newClient(t)
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	sctx := trace.ContextWithSpanContext(ctx, trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled,
	}))
	req := rtmclient.JobRequest{HostID: "host-a", GameID: "g1", Payload: rtmclient.RestartPayload{}, IdempotencyKey: "k1", MaxAttempts: 2}
	first, inserted, err := c.Enqueue(sctx, c.Pool(), req)
	if err != nil || !inserted {
		t.Fatalf("first: %v %v", inserted, err)
	}
	if want := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"; first.Traceparent != want || first.MaxAttempts != 2 {
		t.Fatalf("traceparent %q max attempts %d", first.Traceparent, first.MaxAttempts)
	}
	again, inserted, err := c.Enqueue(ctx, c.Pool(), req)
	if err != nil || inserted || again.ID != first.ID {
		t.Fatalf("second: %+v %v %v", again, inserted, err)
	}
	plain, _, err := c.Enqueue(ctx, c.Pool(), rtmclient.JobRequest{HostID: "host-a", GameID: "g1", Payload: rtmclient.RemovePayload{}})
	if err != nil || plain.Traceparent != "" {
		t.Fatalf("no span: %+v %v", plain, err)
	}
}

func TestReadCancelAndConsume(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.Pool(t)
	c := rtmclient.New(pool)
	store := db.NewStore(pool, nil)

	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, g := range []string{"g1", "g2"} {
		_, err := store.UpdateRecord(ctx, g, func(*runtime.RuntimeRecord, time.Time) (runtime.RuntimeRecord, outbox.TransitionDetails, error) {
			r, err := runtime.Create(runtime.Placement{GameID: g, HostID: "host-a", EngineEndpoint: runtime.EngineEndpointFor(g),
				StatePath: "/srv/" + g, DockerNetwork: "galaxy"}, "c-"+g, "engine:1", at)
			return r, outbox.TransitionDetails{Reason: outbox.ReasonJobStart}, err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	rec, err := c.GetRecord(ctx, "g1")
	if err != nil || rec.Status != rtmclient.RecordRunning || rec.CurrentContainerID != "c-g1" || !rec.CreatedAt.Equal(at) {
		t.Fatalf("GetRecord: %+v %v", rec, err)
	}
	if _, err := c.GetRecord(ctx, "nope"); !errors.Is(err, rtmclient.ErrNotFound) {
		t.Fatalf("unknown game: %v", err)
	}
	recs, err := c.ListRecords(ctx, rtmclient.RecordFilter{Status: rtmclient.RecordRunning})
	if err != nil || len(recs) != 2 || recs[0].GameID != "g1" {
		t.Fatalf("ListRecords: %+v %v", recs, err)
	}
	if recs, _ := c.ListRecords(ctx, rtmclient.RecordFilter{HostID: "host-b"}); len(recs) != 0 {
		t.Fatalf("other host: %+v", recs)
	}

	j, _, err := c.Enqueue(ctx, pool, rtmclient.JobRequest{HostID: "host-a", GameID: "g1", Payload: rtmclient.StopPayload{}})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := c.CancelJob(ctx, j.ID); err != nil || got.Status != rtmclient.JobCancelled {
		t.Fatalf("cancel: %+v %v", got, err)
	}
	if _, err := c.CancelJob(ctx, j.ID); !errors.Is(err, rtmclient.ErrJobFinished) {
		t.Fatalf("cancel again: %v", err)
	}
	if _, err := c.CancelJob(ctx, 999); !errors.Is(err, rtmclient.ErrNotFound) {
		t.Fatalf("cancel unknown: %v", err)
	}
	if _, err := c.GetJob(ctx, 999); !errors.Is(err, rtmclient.ErrNotFound) {
		t.Fatalf("get unknown: %v", err)
	}

	cons, err := c.Consumer(ctx, "gm", rtmclient.ConsumerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var got []rtmclient.Event
	wait.For(t, 30*time.Second, "three events", func() bool {
		evs, err := cons.Fetch(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, evs...)
		return len(got) >= 3
	})
	types := []rtmclient.EventType{got[0].Type, got[1].Type, got[2].Type}
	if !slices.Equal(types, []rtmclient.EventType{rtmclient.EventRuntimeRunning, rtmclient.EventRuntimeRunning, rtmclient.EventJobCancelled}) {
		t.Fatalf("types %v", types)
	}
	rp, err := got[0].RuntimePayload()
	if err != nil || rp.ToStatus != rtmclient.RecordRunning || rp.Reason != "job_start" || rp.Record.GameID != "g1" {
		t.Fatalf("runtime payload %+v %v", rp, err)
	}
	if _, err := got[0].JobPayload(); err == nil {
		t.Fatal("a runtime event decoded as a job event")
	}
	jp, err := got[2].JobPayload()
	if err != nil || jp.JobID != j.ID || jp.Status != rtmclient.JobCancelled {
		t.Fatalf("job payload %+v %v", jp, err)
	}
	if err := cons.Ack(ctx, got[1]); err != nil {
		t.Fatal(err)
	}
	again, err := c.Consumer(ctx, "gm", rtmclient.ConsumerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if evs, err := again.Fetch(ctx, 0); err != nil || len(evs) != 1 || evs[0].ID != got[2].ID {
		t.Fatalf("after ack of two: %+v %v", evs, err)
	}
	infos, err := c.Consumers(ctx)
	if err != nil || len(infos) != 1 || infos[0].Acked != got[1].Position() {
		t.Fatalf("consumers %+v %v", infos, err)
	}
	tail, err := c.TailEvents(ctx, 2)
	if err != nil || len(tail) != 2 || tail[1].ID != got[2].ID {
		t.Fatalf("tail %+v %v", tail, err)
	}
	if err := c.UnregisterConsumer(ctx, "gm"); err != nil {
		t.Fatal(err)
	}
	if err := c.UnregisterConsumer(ctx, "gm"); !errors.Is(err, rtmclient.ErrNotFound) {
		t.Fatalf("unregister twice: %v", err)
	}
}

// jsonFields lists a struct's JSON field names and their options.
func jsonFields(t reflect.Type) []string {
	var out []string
	for i := range t.NumField() {
		out = append(out, t.Field(i).Tag.Get("json"))
	}
	slices.Sort(out)
	return out
}

// The client's public types mirror the agent's internal ones; the JSON
// they read and write must be the same.
func TestPublicTypesMatchTheAgents(t *testing.T) {
	t.Parallel()
	pairs := []struct{ public, internal any }{
		{rtmclient.StartPayload{}, job.StartPayload{}},
		{rtmclient.StopPayload{}, job.StopPayload{}},
		{rtmclient.RestartPayload{}, job.RestartPayload{}},
		{rtmclient.RemovePayload{}, job.RemovePayload{}},
		{rtmclient.ChangeImagePayload{}, job.ChangeImagePayload{}},
		{rtmclient.Limits{}, job.Limits{}},
		{rtmclient.Healthcheck{}, job.Healthcheck{}},
		{rtmclient.Record{}, outbox.RecordSnapshot{}},
		{rtmclient.RuntimePayload{}, outbox.RuntimePayload{}},
		{rtmclient.JobPayload{}, outbox.JobPayload{}},
		{rtmclient.OrphanPayload{}, outbox.OrphanPayload{}},
		{rtmclient.HealthPayload{}, outbox.HealthPayload{}},
	}
	for _, p := range pairs {
		a, b := reflect.TypeOf(p.public), reflect.TypeOf(p.internal)
		if !slices.Equal(jsonFields(a), jsonFields(b)) {
			t.Errorf("%s has JSON fields %v, the agent's %s %v", a, jsonFields(a), b, jsonFields(b))
		}
	}
	for _, k := range job.AllKinds() {
		if _, err := rtmclient.Validate(rtmclient.JobRequest{HostID: "h", GameID: "g", Payload: rtmclient.RawPayload{JobKind: rtmclient.Kind(k), JSON: json.RawMessage(`{"image_ref":"e:1"}`)}}); err != nil && (k == job.KindStart || k == job.KindChangeImage || k == job.KindPull) {
			t.Errorf("kind %s: %v", k, err)
		}
	}
	var types []string
	for _, ty := range outbox.AllTypes() {
		types = append(types, string(ty))
	}
	public := []string{
		string(rtmclient.EventRuntimeRunning), string(rtmclient.EventRuntimeStopped), string(rtmclient.EventRuntimeRemoved),
		string(rtmclient.EventJobSucceeded), string(rtmclient.EventJobFailed), string(rtmclient.EventJobCancelled),
		string(rtmclient.EventContainerOrphaned), string(rtmclient.EventRuntimeHealth),
	}
	if !slices.Equal(types, public) {
		t.Errorf("event types %v, the agent's %v", public, types)
	}
}
