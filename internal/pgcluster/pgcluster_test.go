package pgcluster

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A second Stop (a test's cleanup after the test stopped the server
// itself) returns at once instead of waiting for an exit that was already
// reported.
func TestStopTwice(t *testing.T) {
	c, err := Start(context.Background(), Options{})
	if errors.Is(err, ErrNoBinaries) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Stop() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("second Stop: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a second Stop hangs")
	}
}
