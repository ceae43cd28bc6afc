package runtime

import (
	"errors"
	"fmt"
	"time"
)

// Sentinel errors returned (wrapped, with context) by the transitions.
// Callers test for them with errors.Is.
var (
	// ErrNotFound reports that no runtime record exists for a game. The
	// domain never returns it itself; stores do, so that every layer
	// tests for the same value.
	ErrNotFound = errors.New("runtime record not found")

	// ErrInvalidTransition reports an operation the status machine does
	// not allow from the record's current state.
	ErrInvalidTransition = errors.New("invalid runtime transition")

	// ErrRemoved reports an operation on a removed record. Removed is
	// terminal: the record is kept for audit and never changes again.
	ErrRemoved = errors.New("runtime record is removed")

	// ErrStaleContainer reports an event or operation that names a
	// container which is not the record's current container, typically
	// because the game was re-created since. It must not move the record.
	ErrStaleContainer = errors.New("container is not the record's current container")
)

// containerNamePrefix prefixes every engine container name; the same
// name is the container's DNS name on the game network.
const containerNamePrefix = "galaxy-game-"

// enginePort is the port the engine listens on inside its container.
const enginePort = "8080"

// ContainerName returns the Docker container name of the engine of
// gameID, "galaxy-game-{gameID}".
func ContainerName(gameID string) string {
	return containerNamePrefix + gameID
}

// EngineEndpointFor returns the URL at which the Game Master reaches the
// engine of gameID, "http://galaxy-game-{gameID}:8080".
func EngineEndpointFor(gameID string) string {
	return "http://" + ContainerName(gameID) + ":" + enginePort
}

// The transitions below share these rules:
//
//   - at is clamped to the record's LastOpAt, so time never goes
//     backwards on a record, and every change sets LastOpAt to it;
//   - a step already applied returns the record unchanged (LastOpAt
//     included) and a nil error, so callers detect replays with Equal
//     and write nothing;
//   - anything on a removed record fails with ErrRemoved;
//   - every result is checked with Validate before it is returned;
//   - on error the receiver is returned unchanged.

// Placement holds the fields of a record that are fixed when the game is
// first started and never change afterwards.
type Placement struct {
	GameID         string
	HostID         string
	EngineEndpoint string
	StatePath      string
	DockerNetwork  string
}

// Create returns the record of a game started for the first time: status
// running, bound to containerID and imageRef, with CreatedAt, StartedAt
// and LastOpAt set to at.
func Create(p Placement, containerID, imageRef string, at time.Time) (RuntimeRecord, error) {
	if containerID == "" {
		return RuntimeRecord{}, fmt.Errorf("%w: create game %q: container id must not be empty", ErrInvalidTransition, p.GameID)
	}
	if imageRef == "" {
		return RuntimeRecord{}, fmt.Errorf("%w: create game %q: image ref must not be empty", ErrInvalidTransition, p.GameID)
	}
	record := RuntimeRecord{
		GameID:             p.GameID,
		HostID:             p.HostID,
		Status:             StatusRunning,
		CurrentContainerID: containerID,
		CurrentImageRef:    imageRef,
		EngineEndpoint:     p.EngineEndpoint,
		StatePath:          p.StatePath,
		DockerNetwork:      p.DockerNetwork,
		StartedAt:          timePtr(at),
		LastOpAt:           at,
		CreatedAt:          at,
	}
	if err := record.Validate(); err != nil {
		return RuntimeRecord{}, fmt.Errorf("%w: create game %q: %v", ErrInvalidTransition, p.GameID, err)
	}
	return record, nil
}

// Start applies a start or restart job: a stopped record becomes running,
// bound to containerID (the same container or a new one) and imageRef,
// with StartedAt set and StoppedAt cleared.
//
// A running record already bound to containerID and imageRef is returned
// unchanged. A running record bound to another container, or to the same
// container with another image, is refused: replacing what runs is an
// image change, not a start.
func (r RuntimeRecord) Start(containerID, imageRef string, at time.Time) (RuntimeRecord, error) {
	const op = "start"
	if err := r.precheck(op); err != nil {
		return r, err
	}
	if containerID == "" || imageRef == "" {
		return r, fmt.Errorf("%w: %s game %q: container id and image ref must not be empty", ErrInvalidTransition, op, r.GameID)
	}
	switch r.Status {
	case StatusRunning:
		if r.CurrentContainerID != containerID {
			return r, fmt.Errorf("%w: %s game %q: already running in container %q, not %q", ErrInvalidTransition, op, r.GameID, r.CurrentContainerID, containerID)
		}
		if r.CurrentImageRef != imageRef {
			return r, fmt.Errorf("%w: %s game %q: already running image %q, not %q (use an image change)", ErrInvalidTransition, op, r.GameID, r.CurrentImageRef, imageRef)
		}
		return r, nil
	case StatusStopped:
		return r.toRunning(op, containerID, imageRef, at)
	default:
		return r, r.unexpectedStatus(op)
	}
}

// ObserveStart applies an observed Docker start (including restarts made
// by a restart policy) or a reconcile that finds the container running:
// a stopped record becomes running with StartedAt set and StoppedAt
// cleared; a running record is returned unchanged.
func (r RuntimeRecord) ObserveStart(containerID string, at time.Time) (RuntimeRecord, error) {
	const op = "observe start"
	if err := r.precheck(op); err != nil {
		return r, err
	}
	if err := r.refuseStale(op, containerID); err != nil {
		return r, err
	}
	switch r.Status {
	case StatusRunning:
		return r, nil
	case StatusStopped:
		return r.toRunning(op, containerID, r.CurrentImageRef, at)
	default:
		return r, r.unexpectedStatus(op)
	}
}

// Restart applies a restart of the record's current container, whose new
// run began at runStartedAt (the daemon's time): a running or stopped
// record becomes running with StartedAt and LastOpAt set to at and
// StoppedAt cleared; container and image stay. A running record differs
// from the result only in its times, and that is the point: the engine
// was stopped and started again.
//
// A container keeps its id across restarts, so whether a record already
// reflects this restart is read from its times: a record whose current
// run started at or after runStartedAt (running), or whose last run
// ended at or after it (stopped: the new run has already been seen to
// end), is returned unchanged. Callers therefore date a restart no
// earlier than Docker's own report of it (at not before runStartedAt),
// so that a replayed start event is recognised as already applied.
func (r RuntimeRecord) Restart(containerID string, runStartedAt, at time.Time) (RuntimeRecord, error) {
	const op = "restart"
	if err := r.precheck(op); err != nil {
		return r, err
	}
	if err := r.refuseStale(op, containerID); err != nil {
		return r, err
	}
	if runStartedAt.IsZero() || at.Before(runStartedAt) {
		return r, fmt.Errorf("%w: %s game %q: run start %v must be set and not after the step's time %v",
			ErrInvalidTransition, op, r.GameID, runStartedAt, at)
	}
	switch r.Status {
	case StatusRunning:
		if r.StartedAt != nil && !r.StartedAt.Before(runStartedAt) {
			return r, nil
		}
	case StatusStopped:
		if r.StoppedAt != nil && !r.StoppedAt.Before(runStartedAt) {
			return r, nil
		}
	default:
		return r, r.unexpectedStatus(op)
	}
	return r.toRunning(op, containerID, r.CurrentImageRef, at)
}

// Stop applies a stop job, an observed Docker die or a reconciled exit: a
// running record becomes stopped with StoppedAt set; a stopped record is
// returned unchanged.
func (r RuntimeRecord) Stop(containerID string, at time.Time) (RuntimeRecord, error) {
	const op = "stop"
	if err := r.precheck(op); err != nil {
		return r, err
	}
	if err := r.refuseStale(op, containerID); err != nil {
		return r, err
	}
	switch r.Status {
	case StatusStopped:
		return r, nil
	case StatusRunning:
		next := r
		next.Status = StatusStopped
		next.StoppedAt = timePtr(r.clamp(at))
		next.LastOpAt = r.clamp(at)
		return r.checked(next, op)
	default:
		return r, r.unexpectedStatus(op)
	}
}

// Remove applies a remove job, an observed Docker destroy, the cleanup
// sweep or a reconcile that finds the container gone: the record becomes
// removed, its container id is cleared and RemovedAt is set. StoppedAt is
// kept as it is, so it stays nil for a record removed while running.
//
// An empty containerID means "whatever container is current", for
// callers that act on the game rather than on a container. Removing a
// removed record is refused with ErrRemoved, as is anything else on it.
func (r RuntimeRecord) Remove(containerID string, at time.Time) (RuntimeRecord, error) {
	const op = "remove"
	if err := r.precheck(op); err != nil {
		return r, err
	}
	if containerID != "" {
		if err := r.refuseStale(op, containerID); err != nil {
			return r, err
		}
	}
	switch r.Status {
	case StatusRunning, StatusStopped:
		next := r
		next.Status = StatusRemoved
		next.CurrentContainerID = ""
		next.RemovedAt = timePtr(r.clamp(at))
		next.LastOpAt = r.clamp(at)
		return r.checked(next, op)
	default:
		return r, r.unexpectedStatus(op)
	}
}

// ChangeImage applies an image change: a running or stopped record
// becomes running, bound to the new containerID and imageRef, with
// StartedAt set and StoppedAt cleared. A running record already bound to
// containerID and imageRef is returned unchanged, so a replayed change is
// harmless.
func (r RuntimeRecord) ChangeImage(containerID, imageRef string, at time.Time) (RuntimeRecord, error) {
	const op = "change image"
	if err := r.precheck(op); err != nil {
		return r, err
	}
	if containerID == "" || imageRef == "" {
		return r, fmt.Errorf("%w: %s game %q: container id and image ref must not be empty", ErrInvalidTransition, op, r.GameID)
	}
	switch r.Status {
	case StatusRunning:
		if r.CurrentContainerID == containerID && r.CurrentImageRef == imageRef {
			return r, nil
		}
		return r.toRunning(op, containerID, imageRef, at)
	case StatusStopped:
		return r.toRunning(op, containerID, imageRef, at)
	default:
		return r, r.unexpectedStatus(op)
	}
}

// WithImageDigest returns r with CurrentImageDigest set to digest, the
// digest of the image its current container runs, as the job that bound
// the container learnt it. An empty digest leaves the record as it is. It
// is applied after a transition (Create, Start, ChangeImage), which
// clears the digest when the container or the image changes.
func (r RuntimeRecord) WithImageDigest(digest string) RuntimeRecord {
	if digest == "" || r.Status == StatusRemoved {
		return r
	}
	r.CurrentImageDigest = digest
	return r
}

// Equal reports whether r and o hold the same values. Times are compared
// with time.Time.Equal, so the same instant in another location or
// without a monotonic reading is equal; a nil time differs from any
// non-nil one.
func (r RuntimeRecord) Equal(o RuntimeRecord) bool {
	return r.GameID == o.GameID &&
		r.HostID == o.HostID &&
		r.Status == o.Status &&
		r.CurrentContainerID == o.CurrentContainerID &&
		r.CurrentImageRef == o.CurrentImageRef &&
		r.CurrentImageDigest == o.CurrentImageDigest &&
		r.EngineEndpoint == o.EngineEndpoint &&
		r.StatePath == o.StatePath &&
		r.DockerNetwork == o.DockerNetwork &&
		timePtrEqual(r.StartedAt, o.StartedAt) &&
		timePtrEqual(r.StoppedAt, o.StoppedAt) &&
		timePtrEqual(r.RemovedAt, o.RemovedAt) &&
		r.LastOpAt.Equal(o.LastOpAt) &&
		r.CreatedAt.Equal(o.CreatedAt)
}

// toRunning binds r to containerID and imageRef in status running.
func (r RuntimeRecord) toRunning(op, containerID, imageRef string, at time.Time) (RuntimeRecord, error) {
	at = r.clamp(at)
	next := r
	next.Status = StatusRunning
	if containerID != r.CurrentContainerID || imageRef != r.CurrentImageRef {
		// Another container, or another image: the old digest says
		// nothing about it (the caller sets the new one).
		next.CurrentImageDigest = ""
	}
	next.CurrentContainerID = containerID
	next.CurrentImageRef = imageRef
	next.StartedAt = timePtr(at)
	// Cleared so that "stopped at is not before started at" keeps holding
	// and a stale stop time is not reported for the new run.
	next.StoppedAt = nil
	next.LastOpAt = at
	return r.checked(next, op)
}

// clamp keeps time from going backwards on the record: events and clocks
// of different sources are not ordered, and a transition dated before the
// last one would break the record's time invariants.
func (r RuntimeRecord) clamp(at time.Time) time.Time {
	if at.Before(r.LastOpAt) {
		return r.LastOpAt
	}
	return at
}

// precheck refuses any operation on a removed record and on a record
// that is not valid to begin with (so that an "unchanged" answer never
// hands back an invalid record as if it were fine).
func (r RuntimeRecord) precheck(op string) error {
	if r.Status.IsTerminal() {
		return fmt.Errorf("%w: %s game %q: no transition out of status %q", ErrRemoved, op, r.GameID, r.Status)
	}
	if err := r.Validate(); err != nil {
		return fmt.Errorf("%w: %s game %q: record is invalid: %v", ErrInvalidTransition, op, r.GameID, err)
	}
	return nil
}

func (r RuntimeRecord) refuseStale(op, containerID string) error {
	if containerID != r.CurrentContainerID {
		return fmt.Errorf("%w: %s game %q: container %q, current container %q", ErrStaleContainer, op, r.GameID, containerID, r.CurrentContainerID)
	}
	return nil
}

func (r RuntimeRecord) unexpectedStatus(op string) error {
	return fmt.Errorf("%w: %s game %q: from status %q", ErrInvalidTransition, op, r.GameID, r.Status)
}

// checked returns next if it satisfies Validate, and r with an error
// otherwise. The transitions keep a valid record valid, so a failure here
// is a bug, reported rather than stored.
func (r RuntimeRecord) checked(next RuntimeRecord, op string) (RuntimeRecord, error) {
	if err := next.Validate(); err != nil {
		return r, fmt.Errorf("%w: %s game %q: result is invalid: %v", ErrInvalidTransition, op, r.GameID, err)
	}
	return next, nil
}

func timePtr(t time.Time) *time.Time {
	return &t
}

func timePtrEqual(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.Equal(*b)
}
