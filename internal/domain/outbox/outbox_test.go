package outbox

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/galaxy/rtmanager/internal/domain/job"
	"github.com/galaxy/rtmanager/internal/domain/runtime"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.FixedZone("CET", 3600))

func created(t *testing.T) runtime.RuntimeRecord {
	t.Helper()
	r, err := runtime.Create(runtime.Placement{
		GameID: "g1", HostID: "host-a", EngineEndpoint: runtime.EngineEndpointFor("g1"),
		StatePath: "/srv/state/g1", DockerNetwork: "galaxy",
	}, "c1", "engine:1", t0)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// decodeStrict decodes raw into v, refusing fields v does not have, so
// the tests notice a renamed or extra field.
func decodeStrict(t *testing.T, raw []byte, v any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decode %s: %v", raw, err)
	}
}

func keys(t *testing.T, raw []byte) []string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func TestForTransitionCreated(t *testing.T) {
	after := created(t)
	ev, err := ForTransition(nil, after, TransitionDetails{Reason: ReasonJobStart, JobID: 42})
	if err != nil {
		t.Fatal(err)
	}
	if ev.Type != TypeRuntimeRunning || ev.HostID != "host-a" || ev.GameID != "g1" || ev.JobID != 42 {
		t.Fatalf("event = %+v", ev)
	}
	wantKeys := []string{"at", "container_id", "game_id", "host_id", "image_ref", "job_id", "reason", "record", "requested_by_job", "to_status"}
	if got := keys(t, ev.Payload); !slices.Equal(got, wantKeys) {
		t.Fatalf("payload keys = %v, want %v", got, wantKeys)
	}
	var p RuntimePayload
	decodeStrict(t, ev.Payload, &p)
	if p.FromStatus != "" || p.ToStatus != runtime.StatusRunning || p.Reason != ReasonJobStart ||
		p.ContainerID != "c1" || p.ImageRef != "engine:1" || !p.RequestedByJob || p.JobID == nil || *p.JobID != 42 ||
		!p.At.Equal(t0) || p.At.Location() != time.UTC {
		t.Fatalf("payload = %+v", p)
	}
	if !p.Record.Record().Equal(after) {
		t.Fatalf("record round trip: %+v, want %+v", p.Record.Record(), after)
	}
	if !strings.Contains(string(ev.Payload), `"at":"2026-03-01T11:00:00.123456789Z"`) {
		t.Fatalf("time not in RFC 3339 UTC with nanoseconds: %s", ev.Payload)
	}
	recordKeys := keys(t, mustField(t, ev.Payload, "record"))
	wantRecord := []string{"created_at", "current_container_id", "current_image_ref", "docker_network", "engine_endpoint",
		"game_id", "host_id", "last_op_at", "started_at", "state_path", "status"}
	if !slices.Equal(recordKeys, wantRecord) {
		t.Fatalf("record keys = %v, want %v", recordKeys, wantRecord)
	}
}

func mustField(t *testing.T, raw []byte, name string) []byte {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m[name]
}

func TestForTransitionStoppedAndRemoved(t *testing.T) {
	running := created(t)
	stopped, err := running.Stop("c1", t0.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	code := 137
	ev, err := ForTransition(&running, stopped, TransitionDetails{Reason: ReasonObservedDie, ExitCode: &code, OOM: true})
	if err != nil {
		t.Fatal(err)
	}
	var p RuntimePayload
	decodeStrict(t, ev.Payload, &p)
	if ev.Type != TypeRuntimeStopped || ev.JobID != 0 || p.FromStatus != runtime.StatusRunning || p.ToStatus != runtime.StatusStopped ||
		p.ExitCode == nil || *p.ExitCode != 137 || !p.OOM || p.RequestedByJob || p.JobID != nil {
		t.Fatalf("event %+v payload %+v", ev, p)
	}
	if !p.Record.Record().Equal(stopped) {
		t.Fatal("record round trip differs")
	}

	removed, err := stopped.Remove("", t0.Add(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	ev, err = ForTransition(&stopped, removed, TransitionDetails{Reason: ReasonCleanup})
	if err != nil {
		t.Fatal(err)
	}
	p = RuntimePayload{}
	decodeStrict(t, ev.Payload, &p)
	if ev.Type != TypeRuntimeRemoved || p.ContainerID != "c1" || p.Record.CurrentContainerID != "" ||
		p.Record.RemovedAt == nil || p.Record.StoppedAt == nil {
		t.Fatalf("event %+v payload %+v", ev, p)
	}
	if _, ok := mapOf(t, mustField(t, ev.Payload, "record"))["current_container_id"]; ok {
		t.Fatal("an empty container id is not left out of the record")
	}
	if !p.Record.Record().Equal(removed) {
		t.Fatal("record round trip differs")
	}
}

func mapOf(t *testing.T, raw []byte) map[string]json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestForTransitionRefuses(t *testing.T) {
	r := created(t)
	other := r
	other.GameID = "g2"
	otherHost := r
	otherHost.HostID = "host-b"
	invalid := r
	invalid.HostID = ""
	tests := map[string]struct {
		before *runtime.RuntimeRecord
		after  runtime.RuntimeRecord
		d      TransitionDetails
	}{
		"invalid record":  {nil, invalid, TransitionDetails{Reason: ReasonJobStart}},
		"unknown reason":  {nil, r, TransitionDetails{Reason: "because"}},
		"empty reason":    {nil, r, TransitionDetails{}},
		"negative job id": {nil, r, TransitionDetails{Reason: ReasonJobStart, JobID: -1}},
		"other game":      {&other, r, TransitionDetails{Reason: ReasonJobStart}},
		"other host":      {&otherHost, r, TransitionDetails{Reason: ReasonJobStart}},
		"no change":       {&r, r, TransitionDetails{Reason: ReasonJobStart}},
	}
	for name, tt := range tests {
		if _, err := ForTransition(tt.before, tt.after, tt.d); err == nil {
			t.Errorf("%s: ForTransition accepted it", name)
		}
	}
	if _, err := ForTransition(&r, r, TransitionDetails{Reason: ReasonObservedStart}); !errors.Is(err, ErrNoChange) {
		t.Errorf("replay: %v, want ErrNoChange", err)
	}
}

func TestForJobOutcome(t *testing.T) {
	tests := []struct {
		status job.Status
		typ    Type
		errMsg string
	}{
		{job.StatusSucceeded, TypeJobSucceeded, ""},
		{job.StatusFailed, TypeJobFailed, "image_ref: image not allowed: \"evil\""},
		{job.StatusCancelled, TypeJobCancelled, ""},
	}
	for _, tt := range tests {
		ev, err := ForJobOutcome(7, "g1", "host-a", "start", tt.status, 2, tt.errMsg)
		if err != nil {
			t.Fatalf("%s: %v", tt.status, err)
		}
		if ev.Type != tt.typ || ev.JobID != 7 || ev.GameID != "g1" || ev.HostID != "host-a" {
			t.Fatalf("%s: event %+v", tt.status, ev)
		}
		var p JobPayload
		decodeStrict(t, ev.Payload, &p)
		want := JobPayload{JobID: 7, GameID: "g1", HostID: "host-a", Kind: "start", Status: tt.status, Attempt: 2, Error: tt.errMsg}
		if p != want {
			t.Fatalf("%s: payload %+v, want %+v", tt.status, p, want)
		}
		wantKeys := []string{"attempt", "game_id", "host_id", "job_id", "kind", "status"}
		if tt.errMsg != "" {
			wantKeys = []string{"attempt", "error", "game_id", "host_id", "job_id", "kind", "status"}
		}
		if got := keys(t, ev.Payload); !slices.Equal(got, wantKeys) {
			t.Fatalf("%s: keys %v, want %v", tt.status, got, wantKeys)
		}
	}

	// A refused hostile job is still reported, as written.
	ev, err := ForJobOutcome(8, "../G", "host-a", "launch\n", job.StatusFailed, 1, strings.Repeat("é", MaxErrorBytes))
	if err != nil {
		t.Fatal(err)
	}
	var p JobPayload
	decodeStrict(t, ev.Payload, &p)
	if p.GameID != "../G" || p.Kind != "launch\n" || len(p.Error) > MaxErrorBytes || !utf8.ValidString(p.Error) || !strings.HasSuffix(p.Error, "…") {
		t.Fatalf("payload %+v", p)
	}

	for _, s := range []job.Status{job.StatusQueued, job.StatusRunning, "", "done"} {
		if _, err := ForJobOutcome(7, "g1", "host-a", "stop", s, 1, ""); err == nil {
			t.Errorf("status %q accepted", s)
		}
	}
	if _, err := ForJobOutcome(0, "g1", "host-a", "stop", job.StatusSucceeded, 1, ""); err == nil {
		t.Error("job id 0 accepted")
	}
	if _, err := ForJobOutcome(1, "g1", "host-a", "stop", job.StatusSucceeded, -1, ""); err == nil {
		t.Error("negative attempt accepted")
	}
}

func TestForContainerOrphaned(t *testing.T) {
	ev, err := ForContainerOrphaned(OrphanPayload{HostID: "host-a", ContainerID: "c9", ContainerName: "galaxy-game-g9", At: t0})
	if err != nil {
		t.Fatal(err)
	}
	var p OrphanPayload
	decodeStrict(t, ev.Payload, &p)
	if ev.Type != TypeContainerOrphaned || ev.HostID != "host-a" || p.ContainerID != "c9" || !p.At.Equal(t0) {
		t.Fatalf("event %+v payload %+v", ev, p)
	}
	if got := keys(t, ev.Payload); !slices.Equal(got, []string{"at", "container_id", "container_name", "host_id"}) {
		t.Fatalf("keys %v", got)
	}
	if _, err := ForContainerOrphaned(OrphanPayload{HostID: "host-a", At: t0}); err == nil {
		t.Fatal("orphan without container id accepted")
	}
}

func TestVocabularies(t *testing.T) {
	for _, ty := range AllTypes() {
		if !ty.IsKnown() {
			t.Errorf("%q.IsKnown() = false", ty)
		}
	}
	if len(AllTypes()) != 8 || Type("runtime.paused").IsKnown() {
		t.Error("type vocabulary differs")
	}
	for _, r := range AllReasons() {
		if !r.IsKnown() {
			t.Errorf("%q.IsKnown() = false", r)
		}
	}
	if len(AllReasons()) != 12 || Reason("").IsKnown() {
		t.Error("reason vocabulary differs")
	}
}

// The image digest, when known, is in the runtime payload, its record and
// the job.succeeded payload; unknown, it is left out of all three.
func TestImageDigest(t *testing.T) {
	digest := "sha256:" + strings.Repeat("0f", 32)
	after := created(t).WithImageDigest(digest)
	ev, err := ForTransition(nil, after, TransitionDetails{Reason: ReasonJobStart, JobID: 42})
	if err != nil {
		t.Fatal(err)
	}
	var p RuntimePayload
	decodeStrict(t, ev.Payload, &p)
	if p.ImageDigest != digest || p.Record.CurrentImageDigest != digest || !p.Record.Record().Equal(after) {
		t.Fatalf("payload = %+v", p)
	}
	job1, err := ForJobOutcomeImage(7, "g1", "host-a", "pull", job.StatusSucceeded, 1, "", digest)
	if err != nil {
		t.Fatal(err)
	}
	var jp JobPayload
	decodeStrict(t, job1.Payload, &jp)
	if jp.ImageDigest != digest || jp.Kind != "pull" {
		t.Fatalf("job payload = %+v", jp)
	}
	job2, err := ForJobOutcome(8, "g1", "host-a", "stop", job.StatusSucceeded, 1, "")
	if err != nil || strings.Contains(string(job2.Payload), "image_digest") {
		t.Fatalf("a job without a digest: %s, %v", job2.Payload, err)
	}
}

func TestForHealth(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	ok := HealthPayload{GameID: "g1", HostID: "h", ContainerID: "c", FromHealth: runtime.HealthStarting, Health: runtime.HealthHealthy, Reason: HealthObserved, At: t0}
	ev, err := ForHealth(ok)
	if err != nil || ev.Type != TypeRuntimeHealth || ev.GameID != "g1" {
		t.Fatalf("%+v %v", ev, err)
	}
	for _, bad := range []func(*HealthPayload){
		func(p *HealthPayload) { p.Health = p.FromHealth },   // a probe that changes nothing is no event
		func(p *HealthPayload) { p.Health = "sick" },         // unknown value
		func(p *HealthPayload) { p.Reason = "observed_die" }, // not a health reason
		func(p *HealthPayload) { p.ContainerID = "" },        // no container
	} {
		p := ok
		bad(&p)
		if _, err := ForHealth(p); err == nil {
			t.Errorf("ForHealth(%+v) accepted", p)
		}
	}
}
