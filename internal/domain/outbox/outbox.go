// Package outbox defines the events the agent appends to the outbox
// table, in the same transaction as the change each one reports. The
// Game Master reads them in commit order; their types and JSON payloads
// are part of the external contract and documented here.
//
// Every payload is a JSON object with snake_case fields. Times are
// RFC 3339 in UTC with nanoseconds (trailing zeros dropped, as Go's
// time.RFC3339Nano writes them); optional fields are left out rather
// than null.
//
// # What reason means
//
// The reason of a runtime.* event names the cause of the change, never the
// part of the agent that happened to commit it. A job's own commit, the
// events watcher and a relist may each find the same change of a
// container; whichever commits first writes the one event, and it says the
// same thing:
//
//   - a change a job asked for carries job_<kind> and the job's id
//     (job_id, with requested_by_job true), and for a stop the exit code,
//     with oom only when Docker reported an OOM kill;
//   - observed_* (a Docker event), reconcile_* (a relist) and cleanup (the
//     sweeper) are for changes no job asked for, and carry no job id.
//
// Which job asked is read from the job table, not from the agent's
// memory: the game's job in progress (ActiveJob) is its job that has been
// claimed at least once and has not finished — running, or queued again
// for its next attempt, after a drain or after its agent died. Every
// writer reads it under the game's lock, and a job's outcome commits with
// its record change under that lock, so the answer is the same whoever
// commits first, and after a restart of the agent.
//
// Each job kind asks for one change of the record, reported by one event
// (none when the job finds its goal already reached, such as a start of
// a game that runs the image asked for):
//
//	kind          event            from → to
//	start         runtime.running  (none) or stopped → running
//	stop          runtime.stopped  running → stopped, exit_code set
//	restart       runtime.running  running or stopped → running: same container, new started_at
//	remove        runtime.removed  running or stopped → removed
//	change_image  runtime.running  running or stopped → running: new container and image
//
// The steps Docker goes through on the way are part of that change and are
// not reported on their own (Claim says Passing): the die of a restart,
// the kill of a running container a remove destroys (so no stopped event
// comes before runtime.removed), the exit and removal of the container an
// image change replaces, and the removal of a stopped container that a
// start replaces by one of another image. Observed steps the job asks
// for (Claimed) are reported with the job's reason whoever sees them
// first: the start of the same container by a start or a restart job, the
// die of a stop job, the destroy of a remove job. The table of Claim:
//
//	job in progress  container started  exited     gone
//	start            claimed            unclaimed  passing
//	stop             unclaimed          claimed    unclaimed
//	restart          claimed            passing    unclaimed
//	remove           unclaimed          passing    claimed
//	change_image     passing            passing    passing
//
// What the job does not ask for keeps the observer's reason, even while
// the job runs: an engine that dies during a start job, or right after a
// start, restart or image change started it, is reported observed_die.
// When that die comes before the job's own change is recorded (the record
// does not name the new container yet, or the die looks like a step of a
// restart), the job looks at its container again when it commits, and
// records the exit in the same transaction, after its change and its
// outcome, still as observed_die.
//
// The limits, by design: the agent cannot tell a step a job asks for from
// the same step happening on its own while the job is in progress (a step
// is judged when it is seen, against the job in progress then), so an
// engine that crashes while a stop job is in progress is reported as that
// stop (job_stop, with the crash's exit code), and its exit during a
// restart, a remove or an image change is part of that job's change. A
// restart whose attempt is retried restarts the engine again, and may
// report each restart. A job that changed the container and then ended
// without recording it (failed after its attempts, cancelled) leaves the
// change to the next relist (reconcile_*). And a container removed behind
// the agent's back while a stop job runs is reported reconcile_dispose when
// the job finds it gone first, observed_destroy when the watcher does.
package outbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/galaxy/rtmanager/internal/domain/crash"
	"github.com/galaxy/rtmanager/internal/domain/job"
	"github.com/galaxy/rtmanager/internal/domain/runtime"
)

// Type identifies what an event reports.
type Type string

const (
	// TypeRuntimeRunning: a game's engine became running (created,
	// started again, or bound to a new image). Payload: RuntimePayload.
	TypeRuntimeRunning Type = "runtime.running"
	// TypeRuntimeStopped: a game's engine exited (stop job, observed die,
	// or an exit found by reconciliation; never on the way of a restart,
	// a remove or an image change). Payload: RuntimePayload, with
	// exit_code and oom when known.
	TypeRuntimeStopped Type = "runtime.stopped"
	// TypeRuntimeRemoved: a game's container was removed; the record is
	// terminal. Payload: RuntimePayload, container_id naming the removed
	// container.
	TypeRuntimeRemoved Type = "runtime.removed"
	// TypeJobSucceeded: a job finished successfully. Payload: JobPayload.
	TypeJobSucceeded Type = "job.succeeded"
	// TypeJobFailed: a job failed for good (invalid, or out of attempts).
	// Payload: JobPayload with error.
	TypeJobFailed Type = "job.failed"
	// TypeJobCancelled: a job was cancelled. Payload: JobPayload.
	TypeJobCancelled Type = "job.cancelled"
	// TypeContainerOrphaned: the agent found a container carrying its
	// labels that no live record owns; it reports it and leaves it alone.
	// Payload: OrphanPayload.
	TypeContainerOrphaned Type = "container.orphaned"
	// TypeRuntimeHealth: the health of a game's running engine changed,
	// as Docker's health check says. Payload: HealthPayload.
	TypeRuntimeHealth Type = "runtime.health"
)

// IsKnown reports whether t is one of the event types.
func (t Type) IsKnown() bool {
	switch t {
	case TypeRuntimeRunning, TypeRuntimeStopped, TypeRuntimeRemoved,
		TypeJobSucceeded, TypeJobFailed, TypeJobCancelled, TypeContainerOrphaned, TypeRuntimeHealth:
		return true
	default:
		return false
	}
}

// AllTypes returns every event type in a stable order.
func AllTypes() []Type {
	return []Type{
		TypeRuntimeRunning, TypeRuntimeStopped, TypeRuntimeRemoved,
		TypeJobSucceeded, TypeJobFailed, TypeJobCancelled, TypeContainerOrphaned,
		TypeRuntimeHealth,
	}
}

// Reason says what caused a runtime transition.
type Reason string

const (
	// ReasonJobStart: a start job (also the creation of a record).
	ReasonJobStart Reason = "job_start"
	// ReasonJobStop: a stop job.
	ReasonJobStop Reason = "job_stop"
	// ReasonJobRestart: a restart job.
	ReasonJobRestart Reason = "job_restart"
	// ReasonJobRemove: a remove job.
	ReasonJobRemove Reason = "job_remove"
	// ReasonJobChangeImage: an image change job.
	ReasonJobChangeImage Reason = "job_change_image"
	// ReasonObservedStart: a Docker start event no job asked for
	// (restart policies, someone else's docker start).
	ReasonObservedStart Reason = "observed_start"
	// ReasonObservedDie: a Docker die event no job asked for (a crash, a
	// kill behind the agent's back).
	ReasonObservedDie Reason = "observed_die"
	// ReasonObservedDestroy: a Docker destroy event no job asked for.
	ReasonObservedDestroy Reason = "observed_destroy"
	// ReasonReconcileExit: reconciliation found the container exited.
	ReasonReconcileExit Reason = "reconcile_exit"
	// ReasonReconcileStart: reconciliation found the container running.
	ReasonReconcileStart Reason = "reconcile_start"
	// ReasonReconcileDispose: reconciliation found the container gone.
	ReasonReconcileDispose Reason = "reconcile_dispose"
	// ReasonCleanup: the sweeper removed a container stopped too long.
	ReasonCleanup Reason = "cleanup"
)

// IsKnown reports whether r is one of the transition reasons.
func (r Reason) IsKnown() bool {
	switch r {
	case ReasonJobStart, ReasonJobStop, ReasonJobRestart, ReasonJobRemove, ReasonJobChangeImage,
		ReasonObservedStart, ReasonObservedDie, ReasonObservedDestroy,
		ReasonReconcileExit, ReasonReconcileStart, ReasonReconcileDispose, ReasonCleanup:
		return true
	default:
		return false
	}
}

// AllReasons returns every transition reason in a stable order.
func AllReasons() []Reason {
	return []Reason{
		ReasonJobStart, ReasonJobStop, ReasonJobRestart, ReasonJobRemove, ReasonJobChangeImage,
		ReasonObservedStart, ReasonObservedDie, ReasonObservedDestroy,
		ReasonReconcileExit, ReasonReconcileStart, ReasonReconcileDispose, ReasonCleanup,
	}
}

// ErrNoChange reports a transition whose before and after records are
// equal: an idempotent replay, which must not produce an event.
var ErrNoChange = errors.New("record did not change")

// Event is one outbox row before it is stored.
type Event struct {
	Type   Type
	HostID string
	GameID string
	// JobID is the job that caused the event, 0 for none.
	JobID int64
	// Payload is the JSON payload described by Type.
	Payload []byte
}

// RecordSnapshot is a runtime record as it appears in event payloads.
type RecordSnapshot struct {
	GameID string         `json:"game_id"`
	HostID string         `json:"host_id"`
	Status runtime.Status `json:"status"`
	// Health is the records table's health column, which the Go client's
	// Record shares this shape with; event payloads leave it out
	// (runtime.health reports its changes).
	Health             runtime.Health `json:"health,omitempty"`
	CurrentContainerID string         `json:"current_container_id,omitempty"`
	CurrentImageRef    string         `json:"current_image_ref,omitempty"`
	CurrentImageDigest string         `json:"current_image_digest,omitempty"`
	EngineEndpoint     string         `json:"engine_endpoint"`
	StatePath          string         `json:"state_path"`
	DockerNetwork      string         `json:"docker_network"`
	StartedAt          *time.Time     `json:"started_at,omitempty"`
	StoppedAt          *time.Time     `json:"stopped_at,omitempty"`
	RemovedAt          *time.Time     `json:"removed_at,omitempty"`
	LastOpAt           time.Time      `json:"last_op_at"`
	CreatedAt          time.Time      `json:"created_at"`
}

// Snapshot returns r as it appears in event payloads, times in UTC.
func Snapshot(r runtime.RuntimeRecord) RecordSnapshot {
	return RecordSnapshot{
		GameID:             r.GameID,
		HostID:             r.HostID,
		Status:             r.Status,
		CurrentContainerID: r.CurrentContainerID,
		CurrentImageRef:    r.CurrentImageRef,
		CurrentImageDigest: r.CurrentImageDigest,
		EngineEndpoint:     r.EngineEndpoint,
		StatePath:          r.StatePath,
		DockerNetwork:      r.DockerNetwork,
		StartedAt:          utcPtr(r.StartedAt),
		StoppedAt:          utcPtr(r.StoppedAt),
		RemovedAt:          utcPtr(r.RemovedAt),
		LastOpAt:           r.LastOpAt.UTC(),
		CreatedAt:          r.CreatedAt.UTC(),
	}
}

// Record returns the runtime record s describes.
func (s RecordSnapshot) Record() runtime.RuntimeRecord {
	return runtime.RuntimeRecord{
		GameID:             s.GameID,
		HostID:             s.HostID,
		Status:             s.Status,
		CurrentContainerID: s.CurrentContainerID,
		CurrentImageRef:    s.CurrentImageRef,
		CurrentImageDigest: s.CurrentImageDigest,
		EngineEndpoint:     s.EngineEndpoint,
		StatePath:          s.StatePath,
		DockerNetwork:      s.DockerNetwork,
		StartedAt:          s.StartedAt,
		StoppedAt:          s.StoppedAt,
		RemovedAt:          s.RemovedAt,
		LastOpAt:           s.LastOpAt,
		CreatedAt:          s.CreatedAt,
	}
}

// RuntimePayload is the payload of the runtime.* events.
//
//	{
//	  "game_id": "g1", "host_id": "host-a",
//	  "from_status": "running",      // left out when the record was created
//	  "to_status": "stopped",
//	  "reason": "observed_die",
//	  "container_id": "4f2a…",       // the container concerned; for runtime.removed, the removed one
//	  "image_ref": "registry.example.com/galaxy/engine:1.4",
//	  "image_digest": "sha256:…",   // when known: the digest the container runs
//	  "exit_code": 137,              // when known (stops)
//	  "oom": true,                   // when Docker reported an OOM kill
//	  "requested_by_job": true,      // with a job_* reason: the job asked for it
//	  "job_id": 42,                  // that job (job_* reasons only)
//	  "at": "2026-03-01T12:00:00.123456789Z",
//	  "record": { ...RecordSnapshot: the record after the transition... }
//	}
type RuntimePayload struct {
	GameID         string         `json:"game_id"`
	HostID         string         `json:"host_id"`
	FromStatus     runtime.Status `json:"from_status,omitempty"`
	ToStatus       runtime.Status `json:"to_status"`
	Reason         Reason         `json:"reason"`
	ContainerID    string         `json:"container_id,omitempty"`
	ImageRef       string         `json:"image_ref,omitempty"`
	ImageDigest    string         `json:"image_digest,omitempty"`
	ExitCode       *int           `json:"exit_code,omitempty"`
	OOM            bool           `json:"oom,omitempty"`
	RequestedByJob bool           `json:"requested_by_job,omitempty"`
	JobID          *int64         `json:"job_id,omitempty"`
	At             time.Time      `json:"at"`
	Record         RecordSnapshot `json:"record"`
}

// TransitionDetails says why a transition happened, beyond the records.
type TransitionDetails struct {
	Reason Reason
	// ExitCode is the engine's exit code, when known.
	ExitCode *int
	// OOM reports that Docker said the engine was killed for memory.
	OOM bool
	// RequestedByJob reports that a job asked for the transition; it is
	// implied by a non-zero JobID and allowed with a job_* reason only.
	RequestedByJob bool
	// JobID is the job that asked for the transition, 0 for none; set with
	// a job_* reason only.
	JobID int64
	// Crash is the crash report of an exit no job asked for, written with
	// the transition (not part of the event's payload); nil for none.
	Crash *crash.Report
}

// ForTransition returns the event reporting the transition from before
// (nil when the record was just created) to after. The type follows
// after.Status. It refuses an invalid after record, an unknown reason, a
// before record of another game or host, and, with ErrNoChange, a
// before record equal to after: a replayed step reports nothing.
func ForTransition(before *runtime.RuntimeRecord, after runtime.RuntimeRecord, d TransitionDetails) (Event, error) {
	if err := after.Validate(); err != nil {
		return Event{}, fmt.Errorf("outbox: transition of game %q: invalid record: %w", after.GameID, err)
	}
	if !d.Reason.IsKnown() {
		return Event{}, fmt.Errorf("outbox: transition of game %q: unknown reason %q", after.GameID, d.Reason)
	}
	if d.JobID < 0 {
		return Event{}, fmt.Errorf("outbox: transition of game %q: negative job id %d", after.GameID, d.JobID)
	}
	if !d.Reason.IsJob() && (d.JobID != 0 || d.RequestedByJob) {
		// See the package documentation: only a job's own change names it.
		return Event{}, fmt.Errorf("outbox: transition of game %q: reason %q is for changes no job asked for, yet job %d is named",
			after.GameID, d.Reason, d.JobID)
	}
	var typ Type
	switch after.Status {
	case runtime.StatusRunning:
		typ = TypeRuntimeRunning
	case runtime.StatusStopped:
		typ = TypeRuntimeStopped
	case runtime.StatusRemoved:
		typ = TypeRuntimeRemoved
	}

	payload := RuntimePayload{
		GameID:         after.GameID,
		HostID:         after.HostID,
		ToStatus:       after.Status,
		Reason:         d.Reason,
		ContainerID:    after.CurrentContainerID,
		ImageRef:       after.CurrentImageRef,
		ImageDigest:    after.CurrentImageDigest,
		ExitCode:       d.ExitCode,
		OOM:            d.OOM,
		RequestedByJob: d.RequestedByJob || d.JobID != 0,
		At:             after.LastOpAt.UTC(),
		Record:         Snapshot(after),
	}
	if d.JobID != 0 {
		payload.JobID = &d.JobID
	}
	if before != nil {
		if before.GameID != after.GameID || before.HostID != after.HostID {
			return Event{}, fmt.Errorf("outbox: transition of game %q on host %q from a record of game %q on host %q",
				after.GameID, after.HostID, before.GameID, before.HostID)
		}
		if before.Equal(after) {
			return Event{}, fmt.Errorf("outbox: transition of game %q: %w", after.GameID, ErrNoChange)
		}
		payload.FromStatus = before.Status
		if payload.ContainerID == "" {
			// A removal clears the record's container; report the one
			// that went away.
			payload.ContainerID = before.CurrentContainerID
		}
	}
	raw, err := json.Marshal(payload)
	if err != nil {
		return Event{}, fmt.Errorf("outbox: encode transition of game %q: %w", after.GameID, err)
	}
	return Event{Type: typ, HostID: after.HostID, GameID: after.GameID, JobID: d.JobID, Payload: raw}, nil
}

// JobPayload is the payload of the job.* events.
//
//	{
//	  "job_id": 42, "game_id": "g1", "host_id": "host-a",
//	  "kind": "start",             // as written in the job, even when unknown
//	  "status": "failed",          // succeeded, failed or cancelled
//	  "attempt": 5,                // attempts made, this one included
//	  "error": "image_ref: image not allowed: …",  // failed jobs
//	  "image_digest": "sha256:…"   // succeeded start, change_image and pull jobs, when known
//	}
type JobPayload struct {
	JobID   int64      `json:"job_id"`
	GameID  string     `json:"game_id"`
	HostID  string     `json:"host_id"`
	Kind    string     `json:"kind"`
	Status  job.Status `json:"status"`
	Attempt int        `json:"attempt"`
	Error   string     `json:"error,omitempty"`
	// ImageDigest is the registry digest of the image a succeeded job
	// ran or pulled (start, change_image, pull), when known.
	ImageDigest string `json:"image_digest,omitempty"`
}

// MaxErrorBytes bounds the error text of a job event; a longer message is
// cut (on a character boundary) and marked with "…".
const MaxErrorBytes = 4096

// ForJobOutcome returns the event reporting that job jobID ended with
// status, which must be final. kind and gameID are reported as written
// in the job, so that a job refused for an unknown kind or a bad game id
// is still reported.
func ForJobOutcome(jobID int64, gameID, hostID string, kind string, status job.Status, attempt int, errMsg string) (Event, error) {
	return ForJobOutcomeImage(jobID, gameID, hostID, kind, status, attempt, errMsg, "")
}

// ForJobOutcomeImage is ForJobOutcome for a job that learnt the digest of
// its image (start, change_image, pull); an empty digest is left out.
func ForJobOutcomeImage(jobID int64, gameID, hostID string, kind string, status job.Status, attempt int, errMsg, imageDigest string) (Event, error) {
	var typ Type
	switch status {
	case job.StatusSucceeded:
		typ = TypeJobSucceeded
	case job.StatusFailed:
		typ = TypeJobFailed
	case job.StatusCancelled:
		typ = TypeJobCancelled
	default:
		return Event{}, fmt.Errorf("outbox: job %d: status %q is not final (want succeeded, failed or cancelled)", jobID, status)
	}
	if jobID <= 0 {
		return Event{}, fmt.Errorf("outbox: job id must be positive, got %d", jobID)
	}
	if attempt < 0 {
		return Event{}, fmt.Errorf("outbox: job %d: negative attempt %d", jobID, attempt)
	}
	raw, err := json.Marshal(JobPayload{
		JobID:   jobID,
		GameID:  gameID,
		HostID:  hostID,
		Kind:    kind,
		Status:  status,
		Attempt: attempt,
		Error:   truncateUTF8(errMsg, MaxErrorBytes),
		// Bounded by the digest's own length: the agent writes it from
		// the daemon's answer, checked like a record's.
		ImageDigest: imageDigest,
	})
	if err != nil {
		return Event{}, fmt.Errorf("outbox: encode outcome of job %d: %w", jobID, err)
	}
	return Event{Type: typ, HostID: hostID, GameID: gameID, JobID: jobID, Payload: raw}, nil
}

// OrphanPayload is the payload of container.orphaned events.
//
//	{
//	  "host_id": "host-a",
//	  "game_id": "g1",               // from the container's labels, when present
//	  "container_id": "4f2a…",
//	  "container_name": "galaxy-game-g1",
//	  "at": "2026-03-01T12:00:00Z"
//	}
type OrphanPayload struct {
	HostID        string    `json:"host_id"`
	GameID        string    `json:"game_id,omitempty"`
	ContainerID   string    `json:"container_id"`
	ContainerName string    `json:"container_name,omitempty"`
	At            time.Time `json:"at"`
}

// ForContainerOrphaned returns the event reporting an orphaned container.
func ForContainerOrphaned(o OrphanPayload) (Event, error) {
	if o.HostID == "" || o.ContainerID == "" || o.At.IsZero() {
		return Event{}, errors.New("outbox: orphaned container needs a host id, a container id and a time")
	}
	o.At = o.At.UTC()
	raw, err := json.Marshal(o)
	if err != nil {
		return Event{}, fmt.Errorf("outbox: encode orphaned container %q: %w", o.ContainerID, err)
	}
	return Event{Type: TypeContainerOrphaned, HostID: o.HostID, GameID: o.GameID, Payload: raw}, nil
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// truncateUTF8 cuts s to at most n bytes without splitting a character.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = "…"
	cut := n - len(mark)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}
