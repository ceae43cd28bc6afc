package outbox

import (
	"strings"
	"testing"
	"time"

	"github.com/galaxy/rtmanager/internal/domain/job"
)

// TestClaimTable is the table of the package documentation, cell by cell.
func TestClaimTable(t *testing.T) {
	want := map[job.Kind][3]Claim{ // started, exited, gone
		job.KindStart:       {Claimed, Unclaimed, Passing},
		job.KindStop:        {Unclaimed, Claimed, Unclaimed},
		job.KindRestart:     {Claimed, Passing, Unclaimed},
		job.KindRemove:      {Unclaimed, Passing, Claimed},
		job.KindChangeImage: {Passing, Passing, Passing},
		job.KindPull:        {Unclaimed, Unclaimed, Unclaimed}, // touches no container
		"format_disk":       {Unclaimed, Unclaimed, Unclaimed},
	}
	if len(want) != len(job.AllKinds())+1 {
		t.Fatalf("the table misses a kind: %v", job.AllKinds())
	}
	steps := [3]Step{StepStart, StepExit, StepGone}
	for kind, claims := range want {
		a := &ActiveJob{ID: 7, Kind: kind}
		for i, s := range steps {
			if got := a.Claim(s); got != claims[i] {
				t.Errorf("%s job, step %d: %v, want %v", kind, s, got, claims[i])
			}
		}
	}
	var none *ActiveJob
	for _, s := range steps {
		if got := none.Claim(s); got != Unclaimed {
			t.Errorf("no job, step %d: %v", s, got)
		}
	}
}

func TestAttribute(t *testing.T) {
	d, report := Attribute(&ActiveJob{ID: 42, Kind: job.KindStop}, StepExit, ReasonObservedDie)
	if !report || d.Reason != ReasonJobStop || d.JobID != 42 || !d.RequestedByJob {
		t.Errorf("stop job, exit: %+v, %v", d, report)
	}
	d, report = Attribute(&ActiveJob{ID: 42, Kind: job.KindStart}, StepExit, ReasonObservedDie)
	if !report || d.Reason != ReasonObservedDie || d.JobID != 0 || d.RequestedByJob {
		t.Errorf("start job, exit (a crash): %+v, %v", d, report)
	}
	if d, report = Attribute(&ActiveJob{ID: 42, Kind: job.KindRestart}, StepExit, ReasonReconcileExit); report {
		t.Errorf("restart job, exit: reported %+v", d)
	}
	d, report = Attribute(nil, StepGone, ReasonReconcileDispose)
	if !report || d.Reason != ReasonReconcileDispose || d.JobID != 0 {
		t.Errorf("no job, gone: %+v, %v", d, report)
	}
}

func TestJobReasons(t *testing.T) {
	recordKinds := 0
	for _, k := range job.AllKinds() {
		r, ok := JobReason(k)
		if k == job.KindPull {
			// A pull changes no record: it has no runtime reason.
			if ok || r != "" {
				t.Errorf("kind pull: reason %q, %v", r, ok)
			}
			continue
		}
		recordKinds++
		if !ok || !r.IsKnown() || !r.IsJob() || r != Reason("job_"+string(k)) {
			t.Errorf("kind %s: reason %q, %v", k, r, ok)
		}
	}
	if r, ok := JobReason("format_disk"); ok || r != "" {
		t.Errorf("unknown kind: %q, %v", r, ok)
	}
	jobs := 0
	for _, r := range AllReasons() {
		if r.IsJob() != strings.HasPrefix(string(r), "job_") {
			t.Errorf("reason %s: IsJob %v", r, r.IsJob())
		}
		if r.IsJob() {
			jobs++
		}
	}
	if jobs != recordKinds {
		t.Errorf("%d job reasons for %d kinds that change records", jobs, recordKinds)
	}
}

// TestForTransitionNamesJobsOnlyForTheirChanges: a job id (or
// requested_by_job) with a reason that is not a job's is refused.
func TestForTransitionNamesJobsOnlyForTheirChanges(t *testing.T) {
	before := created(t)
	after, err := before.Stop("c1", t0.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []TransitionDetails{
		{Reason: ReasonObservedDie, JobID: 7},
		{Reason: ReasonReconcileDispose, JobID: 7, RequestedByJob: true},
		{Reason: ReasonCleanup, RequestedByJob: true},
	} {
		if _, err := ForTransition(&before, after, d); err == nil || !strings.Contains(err.Error(), "no job asked for") {
			t.Errorf("%+v: error %v", d, err)
		}
	}
	ev, err := ForTransition(&before, after, TransitionDetails{Reason: ReasonJobStop, JobID: 7})
	if err != nil || ev.JobID != 7 {
		t.Fatalf("job_stop with its job: %+v, %v", ev, err)
	}
	ev, err = ForTransition(&before, after, TransitionDetails{Reason: ReasonObservedDie})
	if err != nil || ev.JobID != 0 {
		t.Fatalf("observed_die: %+v, %v", ev, err)
	}
}
