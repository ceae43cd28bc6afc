package runtime

import (
	"errors"
	"testing"
	"time"
)

// FuzzTransitionsKeepRecordValid applies sequences of operations decoded
// from the input, four bytes each (operation, container choice, image
// choice, signed time step in seconds), to a freshly created record, and
// checks that no sequence yields an invalid record, that time never goes
// backwards, that a refused step changes nothing and that a removed
// record never changes.
func FuzzTransitionsKeepRecordValid(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{2, 1, 0, 5, 1, 1, 0, 5, 3, 0, 0, 5, 0, 1, 1, 5})                // die, observed start, remove, start
	f.Add([]byte{4, 2, 2, 1, 2, 1, 0, 1, 2, 2, 0, 0x80, 3, 1, 0, 1, 3, 0, 0, 1}) // change, stale die, die at -128s, stale remove, remove
	f.Add([]byte{2, 1, 0, 10, 0, 3, 2, 0xfb, 1, 3, 0, 0xfb, 4, 3, 1, 0})         // stop, start elsewhere, earlier steps
	f.Add([]byte{0, 1, 1, 0, 4, 1, 1, 0, 1, 1, 0, 0, 2, 0, 0, 0, 3, 1, 0, 9})    // replays and empty ids

	containers := []string{"", "c1", "c2", "c3"}
	images := []string{"", "img:a", "img:b"}
	f.Fuzz(func(t *testing.T, data []byte) {
		now := t0
		r, err := Create(placement(), "c1", "img:a", now)
		if err != nil {
			t.Fatal(err)
		}
		created := r
		for i := 0; i+3 < len(data); i += 4 {
			container := containers[int(data[i+1])%len(containers)]
			image := images[int(data[i+2])%len(images)]
			now = now.Add(time.Duration(int8(data[i+3])) * time.Second)

			var next RuntimeRecord
			switch data[i] % 6 {
			case 0:
				next, err = r.Start(container, image, now)
			case 1:
				next, err = r.ObserveStart(container, now)
			case 2:
				next, err = r.Stop(container, now)
			case 3:
				next, err = r.Remove(container, now)
			case 4:
				next, err = r.ChangeImage(container, image, now)
			case 5:
				// The run began up to the step's time byte in seconds before.
				next, err = r.Restart(container, now.Add(-time.Duration(data[i+2])*time.Second), now)
			}

			if r.Status == StatusRemoved && !errors.Is(err, ErrRemoved) {
				t.Fatalf("step %d on a removed record: error %v, want ErrRemoved", i/4, err)
			}
			if err != nil {
				if !errors.Is(err, ErrInvalidTransition) && !errors.Is(err, ErrRemoved) && !errors.Is(err, ErrStaleContainer) {
					t.Fatalf("step %d: error %v wraps no sentinel", i/4, err)
				}
				if !next.Equal(r) {
					t.Fatalf("step %d: refused step changed the record", i/4)
				}
				continue
			}
			if err := next.Validate(); err != nil {
				t.Fatalf("step %d: invalid record %+v: %v", i/4, next, err)
			}
			if next.LastOpAt.Before(r.LastOpAt) {
				t.Fatalf("step %d: LastOpAt went backwards", i/4)
			}
			if next.GameID != created.GameID || next.HostID != created.HostID || next.StatePath != created.StatePath ||
				next.EngineEndpoint != created.EngineEndpoint || next.DockerNetwork != created.DockerNetwork ||
				!next.CreatedAt.Equal(created.CreatedAt) {
				t.Fatalf("step %d: placement changed: %+v", i/4, next)
			}
			r = next
		}
	})
}
