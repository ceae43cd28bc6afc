package retry

import (
	"testing"
	"time"
)

// slack absorbs backoff/v5's float rounding.
const slack = time.Microsecond

// TestBackoffBounds: the waits double from lo, each drawn from [d/2, d],
// never above hi, and Reset starts again from lo.
func TestBackoffBounds(t *testing.T) {
	const lo, hi = 200 * time.Millisecond, 3 * time.Second
	for range 200 {
		b := Backoff(lo, hi)
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
	b := Backoff(1, 1)
	for range 10 {
		if got := b.NextBackOff(); got < 0 || got > 2 {
			t.Fatalf("wait %v", got)
		}
	}
}

// TestNth: the nth wait lies in [d/2, d] for d = lo·2^(n-1) capped at hi,
// and is jittered (not always the same value).
func TestNth(t *testing.T) {
	const lo, hi = time.Second, 30 * time.Second
	for n := 0; n <= 10; n++ {
		d := lo
		for i := 1; i < n && d < hi; i++ {
			d *= 2
		}
		d = min(d, hi)
		seen := map[time.Duration]bool{}
		for range 100 {
			got := Nth(lo, hi, n)
			if got < d/2-slack || got > d+slack {
				t.Fatalf("Nth(%d) = %v outside [%v, %v]", n, got, d/2, d)
			}
			seen[got] = true
		}
		if len(seen) < 2 {
			t.Fatalf("Nth(%d) is not jittered: %v", n, seen)
		}
	}
}
