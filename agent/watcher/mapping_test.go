package watcher

import (
	"testing"
	"time"

	"github.com/galaxy/rtmanager/agent/engine"
	"github.com/galaxy/rtmanager/agent/reconcile"
	"github.com/galaxy/rtmanager/internal/domain/job"
	"github.com/galaxy/rtmanager/internal/domain/outbox"
	"github.com/galaxy/rtmanager/internal/domain/runtime"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func record(t testing.TB, status runtime.Status, containerID string) runtime.RuntimeRecord {
	t.Helper()
	r, err := runtime.Create(runtime.Placement{
		GameID: "g1", HostID: "host-a", EngineEndpoint: runtime.EngineEndpointFor("g1"),
		StatePath: "/srv/g1", DockerNetwork: "galaxy",
	}, containerID, "engine:1", t0)
	if err != nil {
		t.Fatal(err)
	}
	switch status {
	case runtime.StatusStopped:
		r, err = r.Stop(containerID, t0.Add(time.Second))
	case runtime.StatusRemoved:
		r, err = r.Remove(containerID, t0.Add(time.Second))
	}
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func event(action, containerID string, at time.Time, attrs ...string) engine.Event {
	a := map[string]string{engine.LabelManaged: "true", engine.LabelHost: "host-a", engine.LabelGame: "g1"}
	for i := 0; i+1 < len(attrs); i += 2 {
		a[attrs[i]] = attrs[i+1]
	}
	return engine.Event{ID: containerID, Action: action, Attributes: a, TimeNano: at.UnixNano()}
}

func TestMap(t *testing.T) {
	running := record(t, runtime.StatusRunning, "c1")
	stopped := record(t, runtime.StatusStopped, "c1")
	removed := record(t, runtime.StatusRemoved, "c1")
	later := t0.Add(time.Minute)
	exited := &reconcile.Observed{Found: true, State: "exited", ExitCode: 137}
	oomExited := &reconcile.Observed{Found: true, State: "exited", ExitCode: 137, OOMKilled: true}
	runningObs := &reconcile.Observed{Found: true, State: "running"}

	tests := []struct {
		name   string
		cur    *runtime.RuntimeRecord
		in     Input
		want   Verdict
		status runtime.Status
		check  func(t *testing.T, d outbox.TransitionDetails)
	}{
		{name: "die without exit code asks to inspect",
			cur: &running, in: Input{Event: event("die", "c1", later)}, want: NeedInspect},
		{name: "die without exit code takes the inspected one",
			cur: &running, in: Input{Event: event("die", "c1", later), Observed: exited}, want: Apply, status: runtime.StatusStopped,
			check: func(t *testing.T, d outbox.TransitionDetails) {
				if d.ExitCode == nil || *d.ExitCode != 137 {
					t.Errorf("details %+v", d)
				}
			}},
		{name: "die stops with exit code; 137 alone is no OOM",
			cur: &running, in: Input{Event: event("die", "c1", later, "exitCode", "137"), Observed: exited},
			want: Apply, status: runtime.StatusStopped,
			check: func(t *testing.T, d outbox.TransitionDetails) {
				if d.Reason != outbox.ReasonObservedDie || d.ExitCode == nil || *d.ExitCode != 137 || d.OOM || d.RequestedByJob {
					t.Errorf("details %+v", d)
				}
			}},
		{name: "oom event noted", cur: &running, in: Input{Event: event("die", "c1", later, "exitCode", "137"), OOM: true},
			want: Apply, status: runtime.StatusStopped,
			check: func(t *testing.T, d outbox.TransitionDetails) {
				if !d.OOM {
					t.Errorf("details %+v", d)
				}
			}},
		{name: "daemon reports OOMKilled", cur: &running, in: Input{Event: event("die", "c1", later, "exitCode", "137"), Observed: oomExited},
			want: Apply, status: runtime.StatusStopped,
			check: func(t *testing.T, d outbox.TransitionDetails) {
				if !d.OOM {
					t.Errorf("details %+v", d)
				}
			}},
		{name: "container restarted since: its OOM flag is not this exit's", cur: &running,
			in:   Input{Event: event("die", "c1", later, "exitCode", "1"), Observed: &reconcile.Observed{Found: true, State: "running", OOMKilled: true}},
			want: Apply, status: runtime.StatusStopped,
			check: func(t *testing.T, d outbox.TransitionDetails) {
				if d.OOM || *d.ExitCode != 1 {
					t.Errorf("details %+v", d)
				}
			}},
		{name: "start adopts a restart-policy restart", cur: &stopped, in: Input{Event: event("start", "c1", later)},
			want: Apply, status: runtime.StatusRunning},
		{name: "destroy removes", cur: &stopped, in: Input{Event: event("destroy", "c1", later)},
			want: Apply, status: runtime.StatusRemoved},
		{name: "die on stopped changes nothing", cur: &stopped, in: Input{Event: event("die", "c1", later, "exitCode", "0")}, want: NoChange},
		{name: "start on running changes nothing", cur: &running, in: Input{Event: event("start", "c1", later)}, want: NoChange},
		{name: "other container is stale", cur: &running, in: Input{Event: event("die", "c0", later)}, want: Stale},
		{name: "removed is terminal", cur: &removed, in: Input{Event: event("start", "c1", later)}, want: Removed},
		{name: "no record", cur: nil, in: Input{Event: event("die", "c1", later)}, want: NoRecord},
		{name: "oom is no transition", cur: &running, in: Input{Event: event("oom", "c1", later)}, want: Unmapped},
		{name: "unlabelled", cur: &running, in: Input{Event: engine.Event{ID: "c1", Action: "die", TimeNano: later.UnixNano(),
			Attributes: map[string]string{engine.LabelGame: "g1"}}}, want: Foreign},
		{name: "other host", cur: &running, in: Input{HostID: "host-b", Event: event("die", "c1", later)}, want: Foreign},
		{name: "old die, container running again: replay", cur: &running,
			in: Input{Event: event("die", "c1", t0.Add(-time.Second), "exitCode", "0"), Observed: runningObs}, want: Duplicate},
		{name: "old die, container exited: reports the exit Docker shows now", cur: &running,
			in:   Input{Event: event("die", "c1", t0.Add(-time.Second), "exitCode", "2"), OOM: true, Observed: exited},
			want: Apply, status: runtime.StatusStopped,
			check: func(t *testing.T, d outbox.TransitionDetails) {
				if d.ExitCode == nil || *d.ExitCode != 137 || d.OOM {
					t.Errorf("details %+v; want the inspected exit 137 without OOM", d)
				}
			}},
		{name: "old event asks to inspect", cur: &stopped, in: Input{Event: event("start", "c1", t0)}, want: NeedInspect},
		{name: "zero time", cur: &running, in: Input{Event: event("die", "c1", time.Unix(0, 0))}, want: Invalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.in.HostID == "" {
				tc.in.HostID = "host-a"
			}
			next, d, v := Map(tc.cur, tc.in)
			if v != tc.want {
				t.Fatalf("verdict %v, want %v", v, tc.want)
			}
			if v != Apply {
				if tc.cur != nil && !next.Equal(*tc.cur) {
					t.Errorf("record changed without Apply: %+v", next)
				}
				return
			}
			if next.Status != tc.status {
				t.Errorf("status %s, want %s", next.Status, tc.status)
			}
			if tc.check != nil {
				tc.check(t, d)
			}
			// Applying the same event to the result changes nothing.
			in2 := tc.in
			if in2.Observed == nil {
				in2.Observed = &reconcile.Observed{Found: next.Status != runtime.StatusRemoved, State: map[runtime.Status]string{
					runtime.StatusRunning: "running", runtime.StatusStopped: "exited"}[next.Status]}
			}
			if again, _, v := Map(&next, in2); v == Apply || !again.Equal(next) {
				t.Errorf("second application: verdict %v, record %+v", v, again)
			}
		})
	}
}

// TestMapAttributesJobs: the reason says the cause. A step the game's job
// in progress asks for carries its reason and id, a step on the way of its
// operation is deferred to it, and anything else is observed_* (see the
// table in package outbox).
func TestMapAttributesJobs(t *testing.T) {
	running := record(t, runtime.StatusRunning, "c1")
	stopped := record(t, runtime.StatusStopped, "c1")
	later := t0.Add(time.Minute)
	exited := &reconcile.Observed{Found: true, State: "exited", ExitCode: 143}
	jobOf := func(k job.Kind) *outbox.ActiveJob { return &outbox.ActiveJob{ID: 7, Kind: k} }
	die := event("die", "c1", later, "exitCode", "0")

	tests := []struct {
		name   string
		cur    *runtime.RuntimeRecord
		in     Input
		want   Verdict
		status runtime.Status
		reason outbox.Reason
		jobID  int64
	}{
		{name: "stop job: its die", cur: &running, in: Input{Event: die, Job: jobOf(job.KindStop)},
			want: Apply, status: runtime.StatusStopped, reason: outbox.ReasonJobStop, jobID: 7},
		{name: "stop job: a start is not its", cur: &stopped, in: Input{Event: event("start", "c1", later), Job: jobOf(job.KindStop)},
			want: Apply, status: runtime.StatusRunning, reason: outbox.ReasonObservedStart},
		{name: "stop job: a destroy is not its", cur: &running, in: Input{Event: event("destroy", "c1", later), Job: jobOf(job.KindStop)},
			want: Apply, status: runtime.StatusRemoved, reason: outbox.ReasonObservedDestroy},
		{name: "stop job: a replayed die backed by the exit now", cur: &running,
			in:   Input{Event: event("die", "c1", t0.Add(-time.Second), "exitCode", "2"), Job: jobOf(job.KindStop), Observed: exited},
			want: Apply, status: runtime.StatusStopped, reason: outbox.ReasonJobStop, jobID: 7},
		{name: "start job: the start of the same container", cur: &stopped, in: Input{Event: event("start", "c1", later), Job: jobOf(job.KindStart)},
			want: Apply, status: runtime.StatusRunning, reason: outbox.ReasonJobStart, jobID: 7},
		{name: "start job: a crash is not its", cur: &running, in: Input{Event: die, Job: jobOf(job.KindStart)},
			want: Apply, status: runtime.StatusStopped, reason: outbox.ReasonObservedDie},
		{name: "start job: the stopped container it replaces", cur: &stopped, in: Input{Event: event("destroy", "c1", later), Job: jobOf(job.KindStart)},
			want: Deferred},
		{name: "restart job: its die is on the way", cur: &running, in: Input{Event: die, Job: jobOf(job.KindRestart)},
			want: Deferred},
		{name: "restart job: its start of a running record", cur: &running, in: Input{Event: event("start", "c1", later), Job: jobOf(job.KindRestart)},
			want: Apply, status: runtime.StatusRunning, reason: outbox.ReasonJobRestart, jobID: 7},
		{name: "restart job: its start of a stopped record", cur: &stopped, in: Input{Event: event("start", "c1", later), Job: jobOf(job.KindRestart)},
			want: Apply, status: runtime.StatusRunning, reason: outbox.ReasonJobRestart, jobID: 7},
		{name: "restart job: a start older than the run is a replay", cur: &running,
			in:   Input{Event: event("start", "c1", t0.Add(-time.Second)), Job: jobOf(job.KindRestart)},
			want: NoChange},
		{name: "restart job: a destroy is not its", cur: &running, in: Input{Event: event("destroy", "c1", later), Job: jobOf(job.KindRestart)},
			want: Apply, status: runtime.StatusRemoved, reason: outbox.ReasonObservedDestroy},
		{name: "remove job: the kill of a running container is on the way", cur: &running, in: Input{Event: die, Job: jobOf(job.KindRemove)},
			want: Deferred},
		{name: "remove job: its destroy", cur: &running, in: Input{Event: event("destroy", "c1", later), Job: jobOf(job.KindRemove)},
			want: Apply, status: runtime.StatusRemoved, reason: outbox.ReasonJobRemove, jobID: 7},
		{name: "image change: the old container's exit", cur: &running, in: Input{Event: die, Job: jobOf(job.KindChangeImage)},
			want: Deferred},
		{name: "image change: the old container's removal", cur: &stopped, in: Input{Event: event("destroy", "c1", later), Job: jobOf(job.KindChangeImage)},
			want: Deferred},
		{name: "image change: the old container started again (rollback)", cur: &stopped, in: Input{Event: event("start", "c1", later), Job: jobOf(job.KindChangeImage)},
			want: Deferred},
		{name: "the sweeper's removal is cleanup even with a job in progress", cur: &stopped,
			in:   Input{Event: event("destroy", "c1", later), Job: jobOf(job.KindStart), Cleanup: true},
			want: Apply, status: runtime.StatusRemoved, reason: outbox.ReasonCleanup},
		{name: "a job of an unknown kind claims nothing", cur: &running, in: Input{Event: die, Job: jobOf("format_disk")},
			want: Apply, status: runtime.StatusStopped, reason: outbox.ReasonObservedDie},
		{name: "a deferred step that changes nothing is no change", cur: &stopped, in: Input{Event: die, Job: jobOf(job.KindRestart)},
			want: NoChange},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.in.HostID = "host-a"
			next, d, v := Map(tc.cur, tc.in)
			if v != tc.want {
				t.Fatalf("verdict %v, want %v", v, tc.want)
			}
			if v != Apply {
				if !next.Equal(*tc.cur) {
					t.Errorf("record changed without Apply: %+v", next)
				}
				return
			}
			if next.Status != tc.status || d.Reason != tc.reason || d.JobID != tc.jobID || d.RequestedByJob != (tc.jobID != 0) {
				t.Fatalf("status %s, details %+v; want %s, %s, job %d", next.Status, d, tc.status, tc.reason, tc.jobID)
			}
			if _, err := outbox.ForTransition(tc.cur, next, d); err != nil {
				t.Fatalf("outbox event: %v", err)
			}
			if tc.reason == outbox.ReasonJobStop && (d.ExitCode == nil || *d.ExitCode != map[bool]int{true: 143, false: 0}[tc.in.Observed != nil]) {
				t.Errorf("exit code %v", d.ExitCode)
			}
			if tc.reason == outbox.ReasonJobRestart && (!next.StartedAt.Equal(later) || next.StoppedAt != nil) {
				t.Errorf("restart: started at %v, stopped at %v; want %v and none", next.StartedAt, next.StoppedAt, later)
			}
			// The same event again changes nothing.
			in2 := tc.in
			in2.Observed = &reconcile.Observed{Found: next.Status != runtime.StatusRemoved, State: map[runtime.Status]string{
				runtime.StatusRunning: "running", runtime.StatusStopped: "exited"}[next.Status]}
			if again, _, v := Map(&next, in2); v == Apply || !again.Equal(next) {
				t.Errorf("second application: verdict %v, record %+v", v, again)
			}
		})
	}
}

// FuzzMap feeds Map any event (action, attributes, time) against a record
// in any status and any observation: it never panics, never asks to inspect
// once it has an observation, and an Apply always yields a valid, different
// record of the same game with a known reason and an outbox event that
// builds; anything else leaves the record as it was.
func FuzzMap(f *testing.F) {
	f.Add("die", "c1", "true", "host-a", "g1", "137", int64(1e18), uint8(0), "c1", int64(0), true, "exited", 3, false, true, false)
	f.Add("start", "c1", "true", "host-a", "g1", "", int64(1), uint8(1), "c1", int64(5), false, "", 0, true, false, true)
	f.Add("destroy", "x", "false", "", "", "abc", int64(-5), uint8(2), "", int64(-1), true, "running", -1, true, true, true)
	f.Add("oom", "c1", "true", "host-a", "g1", "9999999999999999999", int64(1<<62), uint8(1), "c1", int64(1<<40), true, "dead", 255, true, true, false)
	f.Fuzz(func(t *testing.T, action, id, managed, host, game, exitCode string, timeNano int64,
		status uint8, recContainer string, lastOpOffset int64, found bool, state string, code int, oomKilled, oomNoted, requested bool) {
		attrs := map[string]string{engine.LabelManaged: managed, engine.LabelHost: host, engine.LabelGame: game}
		if exitCode != "" {
			attrs["exitCode"] = exitCode
		}
		in := Input{HostID: "host-a", Event: engine.Event{ID: id, Action: action, Attributes: attrs, TimeNano: timeNano},
			OOM: oomNoted, Cleanup: requested && code%2 == 0}
		if requested {
			// Any kind, known (mostly) or not; ids are positive.
			in.Job = &outbox.ActiveJob{ID: 1 + int64(uint(code)%1000), Kind: job.Kind(state)}
			if kinds := job.AllKinds(); code >= 0 {
				in.Job.Kind = kinds[code%len(kinds)]
			}
		}

		var cur *runtime.RuntimeRecord
		if status%4 != 3 {
			created := t0.Add(time.Duration(lastOpOffset % int64(1000*time.Hour)))
			r, err := runtime.Create(runtime.Placement{GameID: "g1", HostID: "host-a", EngineEndpoint: "http://e", StatePath: "/s", DockerNetwork: "n"},
				"c1", "engine:1", created)
			if err != nil {
				t.Fatal(err)
			}
			if recContainer != "" {
				r.CurrentContainerID = recContainer
			}
			// A blank container id makes an invalid record: the
			// transitions refuse it and Map must not build on it.
			switch status % 4 {
			case 1:
				r, _ = r.Stop(r.CurrentContainerID, created.Add(time.Second))
			case 2:
				r, _ = r.Remove("", created.Add(time.Second))
			}
			cur = &r
		}
		for _, obs := range []*reconcile.Observed{nil, {Found: found, State: state, ExitCode: code, OOMKilled: oomKilled}} {
			in.Observed = obs
			next, d, v := Map(cur, in)
			if obs != nil && v == NeedInspect {
				t.Fatalf("NeedInspect with an observation")
			}
			if v != Apply {
				if cur != nil && !next.Equal(*cur) {
					t.Fatalf("verdict %v changed the record", v)
				}
				continue
			}
			if cur == nil {
				t.Fatalf("Apply without a record")
			}
			if err := next.Validate(); err != nil {
				t.Fatalf("invalid record: %v", err)
			}
			if next.Equal(*cur) || next.GameID != cur.GameID || next.HostID != cur.HostID {
				t.Fatalf("Apply: %+v from %+v", next, *cur)
			}
			if !d.Reason.IsKnown() {
				t.Fatalf("reason %q", d.Reason)
			}
			if d.Reason.IsJob() != (d.JobID != 0) || (d.JobID != 0 && (in.Job == nil || d.JobID != in.Job.ID)) {
				t.Fatalf("reason %q with job %d (job in progress %+v)", d.Reason, d.JobID, in.Job)
			}
			if d.OOM && !oomNoted && !(obs != nil && obs.OOMKilled) {
				t.Fatalf("OOM guessed")
			}
			if _, err := outbox.ForTransition(cur, next, d); err != nil {
				t.Fatalf("outbox event: %v", err)
			}
		}
	})
}
