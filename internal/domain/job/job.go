// Package job defines lifecycle jobs: their kinds and statuses, their
// JSON payloads, and the validation that turns an untrusted job row into
// a Spec an executor can run.
//
// The job table is written by another service, and acting on a job means
// driving the Docker socket, which is root on the host. Every job is
// therefore treated as hostile: Decode checks the kind, the game id, the
// payload's size and JSON shape and every field before anything reaches
// Docker, and its errors wrap sentinels that mark the job as failed for
// good (see IsPermanent) rather than retried.
package job

import (
	"errors"
	"strconv"

	"github.com/galaxy/rtmanager/internal/domain/runtime"
)

// Kind names what a job asks for. The values are part of the external
// contract with the Game Master.
type Kind string

const (
	// KindStart creates and starts the game's engine container, or starts
	// it again when it exists and is stopped.
	KindStart Kind = "start"
	// KindStop stops the engine container gracefully.
	KindStop Kind = "stop"
	// KindRestart restarts the engine container.
	KindRestart Kind = "restart"
	// KindRemove stops and removes the engine container.
	KindRemove Kind = "remove"
	// KindChangeImage replaces the engine container by one running
	// another image, keeping the game's state directory.
	KindChangeImage Kind = "change_image"
	// KindPull makes an image present on the host (pulls it when missing,
	// as a start would), so that later starts do not wait for it: the
	// Game Master warms hosts before a tournament. It touches no
	// container and no record.
	KindPull Kind = "pull"
)

// IsKnown reports whether k is one of the job kinds.
func (k Kind) IsKnown() bool {
	switch k {
	case KindStart, KindStop, KindRestart, KindRemove, KindChangeImage, KindPull:
		return true
	default:
		return false
	}
}

// AllKinds returns every job kind in a stable order.
func AllKinds() []Kind {
	return []Kind{KindStart, KindStop, KindRestart, KindRemove, KindChangeImage, KindPull}
}

// Status is the lifecycle state of a job row.
type Status string

const (
	// StatusQueued: inserted, waiting to be claimed (or to be retried).
	StatusQueued Status = "queued"
	// StatusRunning: claimed by an agent, which holds its lease.
	StatusRunning Status = "running"
	// StatusSucceeded: done; final.
	StatusSucceeded Status = "succeeded"
	// StatusFailed: refused or out of attempts, with its error; final.
	StatusFailed Status = "failed"
	// StatusCancelled: withdrawn before it ran to completion; final.
	StatusCancelled Status = "cancelled"
)

// IsKnown reports whether s is one of the job statuses.
func (s Status) IsKnown() bool {
	switch s {
	case StatusQueued, StatusRunning, StatusSucceeded, StatusFailed, StatusCancelled:
		return true
	default:
		return false
	}
}

// IsFinal reports whether s ends the job: succeeded, failed or cancelled.
func (s Status) IsFinal() bool {
	switch s {
	case StatusSucceeded, StatusFailed, StatusCancelled:
		return true
	default:
		return false
	}
}

// AllStatuses returns every job status in a stable order.
func AllStatuses() []Status {
	return []Status{StatusQueued, StatusRunning, StatusSucceeded, StatusFailed, StatusCancelled}
}

// DefaultMaxAttempts returns how many times a job of kind k is attempted
// before it fails. Start, stop, restart and remove are idempotent and
// converge on retry (a retried start finds the container it created), so
// they get several attempts to ride out a busy daemon or registry. An
// image change replaces the running container and each attempt may pull
// an image while the game is down, so it gets fewer: the Game Master
// should learn quickly that the new image does not work and decide
// (typically roll back). An unknown kind gets one attempt: it fails at
// once anyway.
func DefaultMaxAttempts(k Kind) int {
	switch k {
	case KindStart, KindStop, KindRestart, KindRemove, KindPull:
		return 5
	case KindChangeImage:
		return 3
	default:
		return 1
	}
}

// Sentinel errors. All but ErrInvalidPolicy describe a job that can never
// succeed as written, and are permanent (see IsPermanent).
var (
	// ErrInvalidPayload reports a payload that is not the strict JSON
	// object its kind expects, or a field with a wrong value.
	ErrInvalidPayload = errors.New("invalid job payload")
	// ErrUnknownKind reports a kind that is not one of AllKinds.
	ErrUnknownKind = errors.New("unknown job kind")
	// ErrInvalidGameID reports a game id that cannot name a container.
	ErrInvalidGameID = errors.New("invalid game id")
	// ErrImageNotAllowed reports an image outside the allow-list.
	ErrImageNotAllowed = errors.New("image not allowed")
	// ErrStateDirOutsideRoot reports a state directory that is not a
	// plain relative path inside the state root, or not inside the
	// game's own directory there.
	ErrStateDirOutsideRoot = errors.New("state directory outside the game's own directory")
	// ErrInvalidLimits reports a negative or out-of-range resource limit.
	ErrInvalidLimits = errors.New("invalid resource limits")
	// ErrInvalidEnv reports an environment variable that is malformed,
	// reserved, or over the policy's bounds.
	ErrInvalidEnv = errors.New("invalid environment")
	// ErrNotReady reports an engine with a health check that did not
	// become healthy within the job's ready timeout: unhealthy, still
	// starting, or exited. The attempt had the whole timeout, and another
	// would run the same image the same way (an image change has already
	// put the old engine back), so it is permanent: the Game Master
	// decides what next.
	ErrNotReady = errors.New("engine not ready")

	// ErrInvalidPolicy reports a Policy that cannot be applied. It is the
	// agent's configuration that is wrong, not the job, so it is not
	// permanent: the job is retried once the configuration is fixed.
	ErrInvalidPolicy = errors.New("invalid job policy")
)

// FieldError is the error Decode returns for a bad job: Field names the
// part of the job at fault, in the external contract's terms ("kind",
// "game_id", "payload", "image_ref", `env["NAME"]`,
// "limits.memory_bytes", ...), Err is the sentinel it wraps and Detail
// says what is wrong and what would be accepted.
type FieldError struct {
	Field  string
	Err    error
	Detail string
}

func (e *FieldError) Error() string {
	if e.Err == nil {
		return e.Field + ": " + e.Detail
	}
	return e.Field + ": " + e.Err.Error() + ": " + e.Detail
}

func (e *FieldError) Unwrap() error { return e.Err }

func fieldErr(field string, sentinel error, detail string) error {
	return &FieldError{Field: field, Err: sentinel, Detail: detail}
}

// PermanentError marks an error after which retrying the job is
// pointless, for failures the sentinels do not cover (an executor finds,
// say, a foreign container squatting the game's name).
type PermanentError struct {
	Err error
}

func (e *PermanentError) Error() string {
	if e.Err == nil {
		return "permanent error"
	}
	return e.Err.Error()
}

func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent wraps err in a PermanentError; it returns nil for nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Err: err}
}

// IsPermanent reports whether err means the job must fail now instead of
// being retried: it wraps one of this package's job sentinels (not
// ErrInvalidPolicy), runtime.ErrRemoved, or a *PermanentError.
func IsPermanent(err error) bool {
	if err == nil {
		return false
	}
	var pe *PermanentError
	if errors.As(err, &pe) {
		return true
	}
	for _, sentinel := range []error{
		ErrInvalidPayload, ErrUnknownKind, ErrInvalidGameID, ErrImageNotAllowed,
		ErrStateDirOutsideRoot, ErrInvalidLimits, ErrInvalidEnv, ErrNotReady, runtime.ErrRemoved,
	} {
		if errors.Is(err, sentinel) {
			return true
		}
	}
	return false
}

// quote renders untrusted text for an error message: quoted, so control
// characters cannot forge log lines, and cut short, so a hostile payload
// cannot blow up the job's error column.
func quote(s string) string {
	const maxQuoted = 64
	if len(s) > maxQuoted {
		return strconv.Quote(s[:maxQuoted]) + "…"
	}
	return strconv.Quote(s)
}
