// Package retry is the agent's one notion of waiting between attempts: a
// capped exponential backoff with "equal jitter", built on
// cenkalti/backoff/v5. The interval d doubles from lo up to hi and each
// wait is drawn from [d/2, d], so parties that failed together do not
// retry together, and no wait exceeds hi.
package retry

import (
	"time"

	"github.com/cenkalti/backoff/v5"
)

// Backoff returns a fresh backoff whose waits stay within [lo/2, hi]:
// backoff/v5 randomises an interval by ±factor around it, so [d/2, d] is
// 3d/4 randomised by ±1/3.
func Backoff(lo, hi time.Duration) *backoff.ExponentialBackOff {
	return &backoff.ExponentialBackOff{
		InitialInterval:     max(lo*3/4, 1),
		RandomizationFactor: 1.0 / 3,
		Multiplier:          2,
		MaxInterval:         max(hi*3/4, 1),
	}
}

// Nth returns the wait after the nth failure (1-based) of something that
// keeps no backoff state between attempts, such as a job whose attempt
// count lives in the database: the nth wait of Backoff(lo, hi).
func Nth(lo, hi time.Duration, n int) time.Duration {
	b := Backoff(lo, hi)
	var d time.Duration
	for range max(n, 1) {
		d = b.NextBackOff()
	}
	return d
}
