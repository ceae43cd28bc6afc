package watcher

import (
	"testing"
	"time"
)

// TestBackoffBounds: the waits double from MinBackoff, each drawn from
// [d/2, d], never above MaxBackoff, and Reset starts again from the
// minimum.
func TestBackoffBounds(t *testing.T) {
	const lo, hi = 200 * time.Millisecond, 3 * time.Second
	slack := time.Microsecond // float rounding in backoff/v5
	for range 200 {
		b := newBackoff(lo, hi)
		d := lo
		for i := range 8 {
			got := b.NextBackOff()
			if got < d/2-slack || got > d+slack {
				t.Fatalf("wait %d: %v outside [%v, %v]", i, got, d/2, d)
			}
			d = min(2*d, hi)
		}
		if got := b.NextBackOff(); got < hi/2-slack || got > hi+slack {
			t.Fatalf("capped wait %v outside [%v, %v]", got, hi/2, hi)
		}
		b.Reset()
		if got := b.NextBackOff(); got < lo/2-slack || got > lo+slack {
			t.Fatalf("wait after Reset %v outside [%v, %v]", got, lo/2, lo)
		}
	}
}

// TestBackoffTiny: durations too small to scale still give a wait.
func TestBackoffTiny(t *testing.T) {
	b := newBackoff(1, 1)
	for range 10 {
		if got := b.NextBackOff(); got < 0 || got > 2 {
			t.Fatalf("wait %v", got)
		}
	}
}
