package intent

import (
	"testing"
	"time"
)

func TestRegistry(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	r := New(time.Minute, func() time.Time { return now })

	if _, ok := r.Lookup("c1", Stop); ok {
		t.Fatal("empty registry returned an intent")
	}
	r.Expect("c1", Stop, 7, 1)
	r.Expect("c1", Restart, 8, 1)
	if in, ok := r.Lookup("c1", Stop); !ok || in.JobID != 7 {
		t.Fatalf("stop intent: %+v %v", in, ok)
	}
	if in, ok := r.Lookup("c1", Stop, Restart); !ok || in.JobID != 8 {
		t.Fatalf("most recent of stop/restart: %+v %v", in, ok)
	}
	// Lookup does not consume: the die after the stop event still sees it.
	if _, ok := r.Lookup("c1", Stop); !ok {
		t.Fatal("lookup consumed the intent")
	}
	if _, ok := r.Lookup("c2", Stop); ok {
		t.Fatal("intent leaked to another container")
	}

	now = now.Add(2 * time.Minute)
	if _, ok := r.Lookup("c1", Stop, Restart); ok {
		t.Fatal("expired intent still returned")
	}
	r.Expect("c1", Remove, 9, 1)
	r.Forget("c1", 9, 1)
	if _, ok := r.Lookup("c1", Remove); ok {
		t.Fatal("forgotten intent still returned")
	}
}

// TestForgetKeepsTheNextJobsIntent: the game's next job, or the job's
// next attempt, can be claimed as soon as an attempt's outcome commits,
// and register its intent on the same container before the finished
// attempt forgets its own. The finished attempt must not take the next
// one's (nor the sweeper's) with it.
func TestForgetKeepsTheNextJobsIntent(t *testing.T) {
	r := New(time.Minute, nil)
	r.Expect("c1", Restart, 8, 1)
	r.Expect("c1", Restart, 8, 2)
	r.Expect("c1", Stop, 9, 1)
	r.Expect("c1", Cleanup, 0, 0)
	r.Forget("c1", 8, 1)
	if in, ok := r.Lookup("c1", Restart); !ok || in.Attempt != 2 {
		t.Errorf("the next attempt's intent: %+v %v", in, ok)
	}
	if in, ok := r.Lookup("c1", Stop); !ok || in.JobID != 9 {
		t.Errorf("the next job's intent: %+v %v", in, ok)
	}
	if _, ok := r.Lookup("c1", Cleanup); !ok {
		t.Error("the sweeper's intent went with the finished job's")
	}
	r.Forget("c1", 8, 2)
	r.Forget("c1", 9, 1)
	r.Forget("c1", 0, 0)
	if in, ok := r.Lookup("c1", Restart, Stop, Cleanup); ok {
		t.Errorf("intent %+v left after everyone forgot theirs", in)
	}
}
