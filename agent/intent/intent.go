// Package intent remembers which container operations the agent itself
// asked for outside of jobs: the cleanup sweeper's removals, so that the
// events watcher reports their destroy as cleanup and the reconciler does
// not report them as a container gone (reconcile_dispose). It is
// in-memory: after a restart nothing is expected, and an event is then
// reported as not requested, which is the truthful default.
//
// Jobs are not attributed from here: what a job asks for is read from the
// job table (its job in progress, see package outbox), which every writer
// sees under the game's lock and which survives a restart.
package intent

import (
	"sync"
	"time"
)

// Action is what the agent asked Docker to do with a container.
type Action string

// Cleanup is the sweeper's removal of an expired stopped game: the
// destroy it causes is reported with reason cleanup.
const Cleanup Action = "cleanup"

// Intent is one expected operation.
type Intent struct {
	ContainerID string
	Action      Action
	At          time.Time
}

// Registry holds the expected operations. The zero value is not usable;
// use New.
type Registry struct {
	mu      sync.Mutex
	ttl     time.Duration
	now     func() time.Time
	pending map[string][]Intent
}

// New returns a registry whose intents are forgotten after ttl, so that an
// intent whose event never came does not mislabel a much later one.
func New(ttl time.Duration, now func() time.Time) *Registry {
	if now == nil {
		now = time.Now
	}
	return &Registry{ttl: ttl, now: now, pending: map[string][]Intent{}}
}

// Expect records that the agent is about to ask for action on
// containerID.
func (r *Registry) Expect(containerID string, action Action) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pending[containerID] = append(r.live(containerID), Intent{ContainerID: containerID, Action: action, At: r.now()})
}

// Lookup reports the most recent live intent for containerID among
// actions, without consuming it: one removal produces several events
// (kill, die, destroy) and each may ask.
func (r *Registry) Lookup(containerID string, actions ...Action) (Intent, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	live := r.live(containerID)
	for i := len(live) - 1; i >= 0; i-- {
		for _, a := range actions {
			if live[i].Action == a {
				return live[i], true
			}
		}
	}
	return Intent{}, false
}

// live returns the unexpired intents of containerID and drops the rest.
// The caller holds r.mu.
func (r *Registry) live(containerID string) []Intent {
	cutoff := r.now().Add(-r.ttl)
	kept := r.pending[containerID][:0]
	for _, in := range r.pending[containerID] {
		if in.At.After(cutoff) {
			kept = append(kept, in)
		}
	}
	if len(kept) == 0 {
		delete(r.pending, containerID)
		return nil
	}
	r.pending[containerID] = kept
	return kept
}
