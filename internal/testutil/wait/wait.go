// Package wait lets tests wait on a condition with a deadline instead of
// sleeping for a guessed time.
package wait

import (
	"testing"
	"time"
)

// For polls cond every few milliseconds until it returns true, and fails
// the test naming what it waited for when timeout passes first.
func For(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	ForErr(t, timeout, what, func() (bool, error) { return cond(), nil })
}

// ForErr is For with a condition that may also say why it does not hold
// yet; the last such error is part of the failure message.
func ForErr(t testing.TB, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, err := cond()
		if ok {
			return
		}
		select {
		case <-deadline.C:
			if err != nil {
				t.Fatalf("timed out after %s waiting for %s: %v", timeout, what, err)
			}
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		case <-tick.C:
		}
	}
}
