package rtmclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/distribution/reference"
	"go.opentelemetry.io/otel/propagation"

	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/db/dbsqlc"
	"github.com/galaxy/rtmanager/internal/domain/job"
)

// Kind names what a job asks for.
type Kind string

// The job kinds.
const (
	// KindStart creates and starts the game's engine, or starts it again.
	KindStart Kind = "start"
	// KindStop stops the engine gracefully.
	KindStop Kind = "stop"
	// KindRestart restarts the engine.
	KindRestart Kind = "restart"
	// KindRemove stops and removes the engine container; the record
	// becomes removed for good.
	KindRemove Kind = "remove"
	// KindChangeImage replaces the engine by one running another image,
	// keeping the game's state directory.
	KindChangeImage Kind = "change_image"
	// KindPull makes an image present on the host without touching any
	// game: warm a host before its games start. The job.succeeded event
	// carries the image's digest (JobPayload.ImageDigest).
	KindPull Kind = "pull"
)

// JobStatus is the lifecycle state of a job.
type JobStatus string

// The job statuses. Succeeded, failed and cancelled are final.
const (
	JobQueued    JobStatus = "queued"
	JobRunning   JobStatus = "running"
	JobSucceeded JobStatus = "succeeded"
	JobFailed    JobStatus = "failed"
	JobCancelled JobStatus = "cancelled"
)

// IsFinal reports whether s ends the job.
func (s JobStatus) IsFinal() bool {
	return s == JobSucceeded || s == JobFailed || s == JobCancelled
}

// Payload is a job's typed payload: StartPayload, StopPayload,
// RestartPayload, RemovePayload, ChangeImagePayload, PullPayload, or
// RawPayload.
type Payload interface {
	Kind() Kind
}

// Limits are an engine container's resource limits; zero takes the
// agent's default.
type Limits struct {
	MemoryBytes int64 `json:"memory_bytes,omitempty"`
	NanoCPUs    int64 `json:"nano_cpus,omitempty"`
	PidsLimit   int64 `json:"pids_limit,omitempty"`
}

// StartPayload starts a game.
type StartPayload struct {
	// ImageRef is the engine image; required, and it must be in the
	// agent's allow-list (which only the agent knows: a refused image
	// fails the job, it is not refused at enqueue).
	ImageRef string `json:"image_ref"`
	// Env is the engine's environment; names starting with RTM_ are
	// reserved.
	Env map[string]string `json:"env,omitempty"`
	// Limits are the container's limits.
	Limits Limits `json:"limits,omitempty"`
	// StateDir is the state directory relative to the agent's state
	// root, inside the game's own directory: empty (the game id), the
	// game id, or the game id followed by a path below it ("g1/season-2").
	StateDir string `json:"state_dir,omitempty"`
	// Healthcheck replaces the image's HEALTHCHECK; nil keeps it.
	Healthcheck *Healthcheck `json:"healthcheck,omitempty"`
	// ReadyTimeoutSeconds bounds the wait for an engine with a health
	// check to be healthy, 1..3600; nil takes the agent's default
	// (RTM_READY_TIMEOUT). The job fails if it is not.
	ReadyTimeoutSeconds *int `json:"ready_timeout_seconds,omitempty"`
}

// Healthcheck is an engine container's health check, run by Docker
// inside the container; exit status 0 means healthy. Zero durations and
// retries keep the image's value, else Docker's default.
type Healthcheck struct {
	// Command is the probe's argv, run without a shell (Docker's
	// ["CMD", ...] form, without the "CMD"); required. For a shell:
	// []string{"/bin/sh", "-c", "..."}.
	Command []string `json:"command"`
	// IntervalMillis is the time between probes, 100..600000.
	IntervalMillis int64 `json:"interval_ms,omitempty"`
	// TimeoutMillis bounds one probe, 100..600000.
	TimeoutMillis int64 `json:"timeout_ms,omitempty"`
	// StartPeriodMillis is the warm-up during which failed probes do
	// not count, 100..3600000.
	StartPeriodMillis int64 `json:"start_period_ms,omitempty"`
	// Retries is how many failed probes in a row make the engine
	// unhealthy, 1..100.
	Retries int `json:"retries,omitempty"`
}

// StopPayload stops a game.
type StopPayload struct {
	// TimeoutSeconds is how long the engine may take to exit after
	// SIGTERM, 0..600; nil takes the agent's default (30s).
	TimeoutSeconds *int `json:"timeout_seconds,omitempty"`
}

// RestartPayload restarts a game.
type RestartPayload struct {
	// TimeoutSeconds is the stop timeout of the restart.
	TimeoutSeconds *int `json:"timeout_seconds,omitempty"`
	// ReadyTimeoutSeconds bounds the wait for the engine to be healthy
	// again when its container has a health check; nil takes the agent's
	// default.
	ReadyTimeoutSeconds *int `json:"ready_timeout_seconds,omitempty"`
}

// RemovePayload removes a game's container; it has no fields.
type RemovePayload struct{}

// ChangeImagePayload moves a game to another image.
type ChangeImagePayload struct {
	ImageRef string            `json:"image_ref"`
	Env      map[string]string `json:"env,omitempty"`
	Limits   Limits            `json:"limits,omitempty"`
	// Healthcheck and ReadyTimeoutSeconds are as for a start: the old
	// container comes back when the new engine is not healthy in time.
	Healthcheck         *Healthcheck `json:"healthcheck,omitempty"`
	ReadyTimeoutSeconds *int         `json:"ready_timeout_seconds,omitempty"`
}

// PullPayload warms a host: the image is pulled unless it is there. The
// job names a game like any job (its line of jobs is the one the pull
// waits in) but touches neither its container nor its record.
type PullPayload struct {
	ImageRef string `json:"image_ref"`
}

// RawPayload is a payload given as JSON, for callers that hold it as
// such (the CLI, a relay). It is validated like the typed ones.
type RawPayload struct {
	JobKind Kind
	JSON    json.RawMessage
}

// Kind implements Payload.
func (StartPayload) Kind() Kind { return KindStart }

// Kind implements Payload.
func (StopPayload) Kind() Kind { return KindStop }

// Kind implements Payload.
func (RestartPayload) Kind() Kind { return KindRestart }

// Kind implements Payload.
func (RemovePayload) Kind() Kind { return KindRemove }

// Kind implements Payload.
func (ChangeImagePayload) Kind() Kind { return KindChangeImage }

// Kind implements Payload.
func (PullPayload) Kind() Kind { return KindPull }

// Kind implements Payload.
func (p RawPayload) Kind() Kind { return p.JobKind }

// JobRequest is a job to enqueue.
type JobRequest struct {
	// HostID names the agent that runs the job; required.
	HostID string
	// GameID names the game; it must be usable in a container name.
	GameID string
	// Payload says what to do; its Kind is the job's kind.
	Payload Payload
	// IdempotencyKey, when set, makes the enqueue idempotent per game: a
	// second request with the key returns the first job (while that job
	// is retained).
	IdempotencyKey string
	// MaxAttempts bounds the attempts (1..100); 0 takes the agent's
	// default for the kind.
	MaxAttempts int
	// RunAfter delays the job; zero means now.
	RunAfter time.Time
}

// Job is a row of the job table.
type Job struct {
	ID                int64           `json:"id"`
	HostID            string          `json:"host_id"`
	GameID            string          `json:"game_id"`
	Kind              Kind            `json:"kind"`
	Payload           json.RawMessage `json:"payload"`
	Status            JobStatus       `json:"status"`
	IdempotencyKey    string          `json:"idempotency_key,omitempty"`
	Traceparent       string          `json:"traceparent,omitempty"`
	Attempt           int             `json:"attempt"`
	MaxAttempts       int             `json:"max_attempts"`
	RunAfter          time.Time       `json:"run_after"`
	LeaseOwner        string          `json:"lease_owner,omitempty"`
	LeaseExpiresAt    *time.Time      `json:"lease_expires_at,omitempty"`
	CancelRequestedAt *time.Time      `json:"cancel_requested_at,omitempty"`
	LastError         string          `json:"last_error,omitempty"`
	CreatedAt         time.Time       `json:"created_at"`
	StartedAt         *time.Time      `json:"started_at,omitempty"`
	FinishedAt        *time.Time      `json:"finished_at,omitempty"`
}

func jobOf(j db.Job) Job {
	return Job{
		ID: j.ID, HostID: j.HostID, GameID: j.GameID, Kind: Kind(j.Kind), Payload: json.RawMessage(j.Payload),
		Status: JobStatus(j.Status), IdempotencyKey: j.IdempotencyKey, Traceparent: j.Traceparent,
		Attempt: j.Attempt, MaxAttempts: j.MaxAttempts, RunAfter: j.RunAfter, LeaseOwner: j.LeaseOwner,
		LeaseExpiresAt: j.LeaseExpiresAt, CancelRequestedAt: j.CancelRequestedAt, LastError: j.LastError,
		CreatedAt: j.CreatedAt, StartedAt: j.StartedAt, FinishedAt: j.FinishedAt,
	}
}

// Enqueue validates req and inserts the job with tx: pass the Game
// Master's own pgx.Tx so that the job commits with its state change, or
// the pool for a job of its own. The W3C traceparent of the span in ctx
// (if any) is stored in the job, so the agent's trace continues the
// caller's. inserted is false when the game already had a job with the
// request's idempotency key: that job is returned and nothing is written.
//
// A request that can never run is refused with a *ValidationError
// (errors.Is ErrInvalidJob) before anything is written: unknown kind, bad
// game id, malformed payload, env or limits. Whether the image is in the
// agent's allow-list is known to the agent only: such a job fails there,
// with a job.failed event.
func (c *Client) Enqueue(ctx context.Context, tx DBTX, req JobRequest) (j Job, inserted bool, err error) {
	raw, err := Validate(req)
	if err != nil {
		return Job{}, false, err
	}
	dj, inserted, err := db.InsertJob(ctx, dbsqlc.DBTX(tx), db.NewJob{
		HostID: req.HostID, GameID: req.GameID, Kind: job.Kind(req.Payload.Kind()), Payload: raw,
		IdempotencyKey: req.IdempotencyKey, Traceparent: Traceparent(ctx),
		MaxAttempts: req.MaxAttempts, RunAfter: req.RunAfter,
	})
	if err != nil {
		return Job{}, false, err
	}
	return jobOf(dj), inserted, nil
}

// Traceparent returns the W3C traceparent of the span in ctx, or "" when
// ctx carries no valid span context.
func Traceparent(ctx context.Context) string {
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, carrier)
	return carrier.Get("traceparent")
}

// Validate checks req as the agent would, except for the image
// allow-list and the host's state root, and returns the payload's JSON.
func Validate(req JobRequest) (json.RawMessage, error) {
	if strings.TrimSpace(req.HostID) == "" {
		return nil, invalid("host_id", "is required: name the agent's host")
	}
	if req.Payload == nil {
		return nil, invalid("payload", "is required: a StartPayload, StopPayload, ...")
	}
	if req.MaxAttempts < 0 || req.MaxAttempts > job.MaxAttemptsLimit {
		return nil, invalid("max_attempts", "%d is outside 0..%d (0: the agent's default)", req.MaxAttempts, job.MaxAttemptsLimit)
	}
	if req.IdempotencyKey != "" && strings.TrimSpace(req.IdempotencyKey) == "" {
		return nil, invalid("idempotency_key", "must not be blank")
	}
	var raw []byte
	if p, ok := req.Payload.(RawPayload); ok {
		raw = p.JSON
		if len(raw) == 0 {
			raw = []byte("{}")
		}
	} else {
		var err error
		if raw, err = json.Marshal(req.Payload); err != nil {
			return nil, invalid("payload", "cannot be encoded: %v", err)
		}
	}
	if _, err := job.Decode(string(req.Payload.Kind()), req.GameID, raw, checkPolicy(raw)); err != nil {
		var fe *job.FieldError
		if errors.As(err, &fe) {
			return nil, &ValidationError{Field: fe.Field, Message: fe.Error()}
		}
		return nil, fmt.Errorf("validate job: %w", err)
	}
	return json.RawMessage(raw), nil
}

// checkPolicy is the agent's default policy with what only an agent knows
// relaxed: any syntactically valid image is admitted, and state_dir is
// checked lexically against a stand-in root.
func checkPolicy(raw []byte) job.Policy {
	p := job.DefaultPolicy()
	p.StateRoot = "/rtmanager-state"
	var img struct {
		ImageRef string `json:"image_ref"`
	}
	if json.Unmarshal(raw, &img) == nil && img.ImageRef != "" {
		if named, err := reference.ParseNormalizedNamed(img.ImageRef); err == nil {
			p.AllowedImages = []string{named.Name()}
		}
	}
	return p
}

// GetJob returns a job, or an error that errors.Is ErrNotFound.
func (c *Client) GetJob(ctx context.Context, id int64) (Job, error) {
	j, err := c.store.GetJob(ctx, id)
	if err != nil {
		return Job{}, translate(err)
	}
	return jobOf(j), nil
}

// JobFilter selects jobs; empty fields match all.
type JobFilter struct {
	GameID, HostID string
	Status         JobStatus
	// BeforeID pages: only jobs with a smaller id (0: from the newest).
	BeforeID int64
	// Limit bounds the result (default 100).
	Limit int
}

// ListJobs returns jobs newest first.
func (c *Client) ListJobs(ctx context.Context, f JobFilter) ([]Job, error) {
	js, err := c.store.ListJobs(ctx, db.JobFilter{GameID: f.GameID, HostID: f.HostID, Status: job.Status(f.Status), BeforeID: f.BeforeID, Limit: f.Limit})
	if err != nil {
		return nil, err
	}
	out := make([]Job, len(js))
	for i, j := range js {
		out[i] = jobOf(j)
	}
	return out, nil
}

// CancelJob withdraws a job: a queued job is cancelled at once (with its
// job.cancelled event); a running one is asked to stop, and its agent
// records the outcome. It returns the job after the change; errors.Is
// ErrNotFound for an unknown id, ErrJobFinished for a job already ended.
func (c *Client) CancelJob(ctx context.Context, id int64) (Job, error) {
	j, err := c.store.CancelJob(ctx, id)
	if err != nil {
		return Job{}, translate(err)
	}
	return jobOf(j), nil
}

// RetryJob enqueues a copy of a failed or cancelled job (same host, game,
// kind, payload and maximum attempts; no idempotency key) and returns the
// new job: what `rtmanager jobs retry` and the console's retry do. errors.Is
// ErrNotFound for an unknown id, ErrJobNotRetryable for a job in another
// status, ErrInvalidJob for a payload that would be refused today.
func (c *Client) RetryJob(ctx context.Context, id int64) (Job, error) {
	old, err := c.GetJob(ctx, id)
	if err != nil {
		return Job{}, err
	}
	if old.Status != JobFailed && old.Status != JobCancelled {
		return Job{}, &wrapped{err: fmt.Errorf("job %d is %s: only failed or cancelled jobs are retried", id, old.Status), sentinel: ErrJobNotRetryable}
	}
	j, _, err := c.Enqueue(ctx, c.pool, JobRequest{
		HostID: old.HostID, GameID: old.GameID, MaxAttempts: old.MaxAttempts,
		Payload: RawPayload{JobKind: old.Kind, JSON: old.Payload},
	})
	return j, err
}
