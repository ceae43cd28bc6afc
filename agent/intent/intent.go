// Package intent remembers which container operations the agent itself
// asked for outside of jobs: the cleanup sweeper's removals, so that the
// events watcher reports their destroy as cleanup and the reconciler does
// not report them as a container gone (reconcile_dispose). It is
// in-memory: after a restart nothing is expected, and an event is then
// reported as not requested, which is the truthful default.
//
// Jobs are not attributed from here: what a job asks for is read from the
// job table (its job in progress, see package outbox), which every writer
// sees under the game's lock and which survives a restart. The job actions
// and the job fields of Intent remain for callers that still register or
// forget them; the agent's executor no longer does.
package intent

import (
	"sync"
	"time"
)

// Action is what the agent asked Docker to do with a container.
type Action string

const (
	Stop    Action = "stop"
	Restart Action = "restart"
	Remove  Action = "remove"
	Start   Action = "start"
	// Cleanup is the sweeper's removal of an expired stopped game: the
	// destroy it causes is reported with reason cleanup.
	Cleanup Action = "cleanup"
)

// Intent is one expected operation.
type Intent struct {
	ContainerID string
	Action      Action
	JobID       int64 // 0: not a job's (the sweeper's)
	Attempt     int   // the job's attempt that registered it
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

// Expect records that the agent is about to ask for action on containerID
// on behalf of an attempt of jobID (0, 0 when no job asks).
func (r *Registry) Expect(containerID string, action Action, jobID int64, attempt int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pending[containerID] = append(r.live(containerID), Intent{ContainerID: containerID, Action: action, JobID: jobID, Attempt: attempt, At: r.now()})
}

// Lookup reports the most recent live intent for containerID among
// actions, without consuming it: one stop produces several events (stop,
// die) and each may ask.
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

// Forget drops the intents that an attempt of jobID registered for
// containerID, when the attempt is over. The intents of others stay: the
// game's next job (or the job's next attempt) may already have registered
// its own for the same container, since it can be claimed as soon as this
// attempt's outcome commits, and so may the sweeper.
func (r *Registry) Forget(containerID string, jobID int64, attempt int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	kept := r.pending[containerID][:0]
	for _, in := range r.pending[containerID] {
		if in.JobID != jobID || in.Attempt != attempt {
			kept = append(kept, in)
		}
	}
	if len(kept) == 0 {
		delete(r.pending, containerID)
		return
	}
	r.pending[containerID] = kept
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
