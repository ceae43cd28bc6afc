package worker

import (
	"testing"
	"time"
)

// TestReserveNeverAsksBeyondTheSlots: claims in flight together (the claim
// loop's and a side claim) never ask for more jobs than there are free
// slots and buffer, so that with Prefetch 0 every job claimed can start.
func TestReserveNeverAsksBeyondTheSlots(t *testing.T) {
	w := New(nil, nil, Config{HostID: "h", Owner: "o", Concurrency: 8})
	if w.cfgErr != nil {
		t.Fatal(w.cfgErr)
	}
	// The queue ran dry: the loop's claim leaves half of the free slots
	// (at most sideClaimMax) to a side claim, which takes no more.
	loop := w.reserve(sideClaimMax, 0)
	side := w.reserve(0, sideClaimMax)
	if loop != 4 || side != 4 {
		t.Fatalf("loop's claim asks %d, side claim %d; want 4 and 4", loop, side)
	}
	if n := w.reserve(0, sideClaimMax); n != 0 {
		t.Fatalf("a third claim asks %d with every slot asked for", n)
	}
	// The side claim came back empty: its slots are free again, and only
	// those.
	w.start(nil, side, time.Now(), time.Now())
	if n := w.reserve(0, 0); n != 4 {
		t.Fatalf("after an empty side claim a claim asks %d, want 4", n)
	}
	if w.reserved != 8 {
		t.Fatalf("reserved %d, want 8", w.reserved)
	}

	// A busy queue: the loop's claim asks for every free slot and the
	// buffer.
	w = New(nil, nil, Config{HostID: "h", Owner: "o", Concurrency: 2, Prefetch: 6})
	if n := w.reserve(0, 0); n != 8 {
		t.Fatalf("claim asks %d, want 8 (2 slots, 6 in the buffer)", n)
	}
	if n := w.reserve(0, sideClaimMax); n != 0 {
		t.Fatalf("side claim asks %d beside a claim of every slot", n)
	}
}
