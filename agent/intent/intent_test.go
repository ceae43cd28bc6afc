package intent

import (
	"testing"
	"time"
)

func TestRegistry(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	r := New(time.Minute, func() time.Time { return now })

	if _, ok := r.Lookup("c1", Cleanup); ok {
		t.Fatal("empty registry returned an intent")
	}
	r.Expect("c1", Cleanup)
	if in, ok := r.Lookup("c1", Cleanup); !ok || in.ContainerID != "c1" || in.Action != Cleanup || !in.At.Equal(now) {
		t.Fatalf("cleanup intent: %+v %v", in, ok)
	}
	// Lookup does not consume: the destroy after the die still sees it.
	if _, ok := r.Lookup("c1", Cleanup); !ok {
		t.Fatal("lookup consumed the intent")
	}
	if _, ok := r.Lookup("c2", Cleanup); ok {
		t.Fatal("intent leaked to another container")
	}
	if _, ok := r.Lookup("c1", "other"); ok {
		t.Fatal("intent returned for another action")
	}

	now = now.Add(2 * time.Minute)
	if _, ok := r.Lookup("c1", Cleanup); ok {
		t.Fatal("expired intent still returned")
	}
	if n := len(r.pending); n != 0 {
		t.Fatalf("%d containers still pending after expiry", n)
	}
}
