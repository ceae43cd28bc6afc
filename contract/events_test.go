package contract_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/galaxy/rtmanager/contract"
	"github.com/galaxy/rtmanager/internal/domain/job"
	"github.com/galaxy/rtmanager/internal/domain/outbox"
	"github.com/galaxy/rtmanager/internal/domain/runtime"
)

// record returns a valid record of game g1 in status st.
func record(st runtime.Status, container string) runtime.RuntimeRecord {
	created := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	started := created.Add(time.Second)
	stopped := created.Add(2*time.Second + 123456789)
	removed := created.Add(3 * time.Second)
	r := runtime.RuntimeRecord{
		GameID: "g1", HostID: "host-a", Status: st,
		CurrentContainerID: container, CurrentImageRef: "registry.example.com/galaxy/engine:1.4",
		EngineEndpoint: "http://galaxy-game-g1:8080", StatePath: "/var/lib/rtmanager/state/g1",
		DockerNetwork: "galaxy", StartedAt: &started, CreatedAt: created,
	}
	switch st {
	case runtime.StatusRunning:
		r.LastOpAt = started
	case runtime.StatusStopped:
		r.StoppedAt, r.LastOpAt = &stopped, stopped
	case runtime.StatusRemoved:
		// A removed record keeps no container.
		r.CurrentContainerID, r.CurrentImageRef = "", ""
		r.StoppedAt, r.RemovedAt, r.LastOpAt = &stopped, &removed, removed
	}
	return r
}

// transitionType returns the event type Go gives a transition to st.
func transitionType(t testing.TB, st runtime.Status) outbox.Type {
	t.Helper()
	ev, err := outbox.ForTransition(nil, record(st, "c1"), outbox.TransitionDetails{Reason: outbox.ReasonJobStart})
	if err != nil {
		t.Fatal(err)
	}
	return ev.Type
}

// goEvents builds events with the outbox constructors: every reason into
// every status, from no record and from every status, with and without
// exit details and a job; every job outcome; orphans.
func goEvents(t testing.TB) []outbox.Event {
	t.Helper()
	var out []outbox.Event
	exit := 137
	details := []func(outbox.Reason) outbox.TransitionDetails{
		func(r outbox.Reason) outbox.TransitionDetails { return outbox.TransitionDetails{Reason: r} },
		func(r outbox.Reason) outbox.TransitionDetails {
			return outbox.TransitionDetails{Reason: r, ExitCode: &exit, OOM: true}
		},
		func(r outbox.Reason) outbox.TransitionDetails { return outbox.TransitionDetails{Reason: r, JobID: 42} },
		func(r outbox.Reason) outbox.TransitionDetails {
			return outbox.TransitionDetails{Reason: r, RequestedByJob: true}
		},
	}
	for _, reason := range outbox.AllReasons() {
		for _, to := range runtime.AllStatuses() {
			after := record(to, "c2")
			befores := []*runtime.RuntimeRecord{nil}
			for _, from := range runtime.AllStatuses() {
				b := record(from, "c1")
				befores = append(befores, &b)
			}
			for _, before := range befores {
				for _, d := range details {
					if dd := d(reason); !reason.IsJob() && (dd.JobID != 0 || dd.RequestedByJob) {
						continue // only a job's change names a job: ForTransition refuses it
					}
					ev, err := outbox.ForTransition(before, after, d(reason))
					if errors.Is(err, outbox.ErrNoChange) {
						continue // a replay: Go writes no event
					}
					if err != nil {
						t.Fatalf("transition %v -> %s (%s): %v", before, to, reason, err)
					}
					out = append(out, ev)
				}
			}
		}
	}
	for _, st := range job.AllStatuses() {
		if !st.IsFinal() {
			continue
		}
		for _, kind := range append(asStrings(job.AllKinds()), "format_disk") {
			for _, msg := range []string{"", "image_ref: image not allowed: …", strings.Repeat("é", outbox.MaxErrorBytes)} {
				for _, game := range []string{"g1", "Bad_Game"} {
					ev, err := outbox.ForJobOutcome(7, game, "host-a", kind, st, 3, msg)
					if err != nil {
						t.Fatal(err)
					}
					out = append(out, ev)
				}
			}
		}
	}
	at := time.Date(2026, 3, 1, 12, 0, 0, 5, time.FixedZone("x", 3600))
	for _, o := range []outbox.OrphanPayload{
		{HostID: "host-a", GameID: "g1", ContainerID: "c9", ContainerName: "galaxy-game-g1", At: at},
		{HostID: "host-a", ContainerID: "c9", At: at},
	} {
		ev, err := outbox.ForContainerOrphaned(o)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ev)
	}
	for _, p := range []outbox.HealthPayload{
		{GameID: "g1", HostID: "host-a", ContainerID: "c9", FromHealth: runtime.HealthStarting, Health: runtime.HealthHealthy, Reason: outbox.HealthObserved, At: at},
		{GameID: "g1", HostID: "host-a", ContainerID: "c9", FromHealth: runtime.HealthNone, Health: runtime.HealthUnhealthy, Reason: outbox.HealthReconciled, At: at},
	} {
		ev, err := outbox.ForHealth(p)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ev)
	}
	return out
}

// TestGoEventsValidate: every event payload the Go code writes, for every
// type and reason, is valid under its type's schema.
func TestGoEventsValidate(t *testing.T) {
	t.Parallel()
	events := goEvents(t)
	types := map[outbox.Type]int{}
	reasons := map[string]int{}
	for _, ev := range events {
		types[ev.Type]++
		var p struct {
			Reason string `json:"reason"`
		}
		_ = json.Unmarshal(ev.Payload, &p)
		reasons[p.Reason]++
		if err := validateRaw(t, contract.EventFile(string(ev.Type)), ev.Payload); err != nil {
			t.Errorf("%s %s: %v", ev.Type, ev.Payload, err)
		}
	}
	for _, typ := range outbox.AllTypes() {
		if types[typ] == 0 {
			t.Errorf("no event of type %s was built", typ)
		}
	}
	for _, r := range outbox.AllReasons() {
		if reasons[string(r)] == 0 {
			t.Errorf("no event with reason %s was built", r)
		}
	}
	t.Logf("%d events validated", len(events))
}

// TestEventSchemasRefuse: the event schemas are not vacuous: a payload
// of another type, an unknown reason or status, a missing field, a bad
// time, each fails.
func TestEventSchemasRefuse(t *testing.T) {
	t.Parallel()
	byType := map[outbox.Type][]byte{}
	for _, ev := range goEvents(t) {
		if _, ok := byType[ev.Type]; !ok {
			byType[ev.Type] = ev.Payload
		}
	}
	edit := func(raw []byte, f func(m map[string]any)) []byte {
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		f(m)
		out, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	running, failed, orphan := byType[outbox.TypeRuntimeRunning], byType[outbox.TypeJobFailed], byType[outbox.TypeContainerOrphaned]
	cases := []struct {
		name    string
		typ     outbox.Type
		payload []byte
	}{
		{"a running payload as stopped", outbox.TypeRuntimeStopped, running},
		{"a running payload as removed", outbox.TypeRuntimeRemoved, running},
		{"unknown reason", outbox.TypeRuntimeRunning, edit(running, func(m map[string]any) { m["reason"] = "because" })},
		{"unknown from_status", outbox.TypeRuntimeRunning, edit(running, func(m map[string]any) { m["from_status"] = "paused" })},
		{"no record", outbox.TypeRuntimeRunning, edit(running, func(m map[string]any) { delete(m, "record") })},
		{"record of another status", outbox.TypeRuntimeRunning, edit(running, func(m map[string]any) { m["record"].(map[string]any)["status"] = "stopped" })},
		{"running record without container", outbox.TypeRuntimeRunning, edit(running, func(m map[string]any) {
			delete(m["record"].(map[string]any), "current_container_id")
		})},
		{"job id without requested_by_job", outbox.TypeRuntimeRunning, edit(running, func(m map[string]any) {
			m["job_id"] = 3
			delete(m, "requested_by_job")
		})},
		{"bad time", outbox.TypeRuntimeRunning, edit(running, func(m map[string]any) { m["at"] = "yesterday" })},
		{"a failed job as succeeded", outbox.TypeJobSucceeded, failed},
		{"job without attempt", outbox.TypeJobFailed, edit(failed, func(m map[string]any) { delete(m, "attempt") })},
		{"job error too long", outbox.TypeJobFailed, edit(failed, func(m map[string]any) { m["error"] = strings.Repeat("x", outbox.MaxErrorBytes+1) })},
		{"orphan without container", outbox.TypeContainerOrphaned, edit(orphan, func(m map[string]any) { delete(m, "container_id") })},
	}
	for _, c := range cases {
		if c.payload == nil {
			t.Fatalf("%s: no payload to start from", c.name)
		}
		if err := validateRaw(t, contract.EventFile(string(c.typ)), c.payload); err == nil {
			t.Errorf("%s: accepted by the %s schema: %s", c.name, c.typ, c.payload)
		}
	}
}
