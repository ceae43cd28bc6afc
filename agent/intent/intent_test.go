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
	r.Expect("c1", Stop, 7)
	r.Expect("c1", Restart, 8)
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
	r.Expect("c1", Remove, 9)
	r.Forget("c1")
	if _, ok := r.Lookup("c1", Remove); ok {
		t.Fatal("forgotten intent still returned")
	}
}
