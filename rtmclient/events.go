package rtmclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/galaxy/rtmanager/internal/db"
)

// EventType says what an event reports.
type EventType string

// The event types. runtime.* events report a record's transition and
// carry a RuntimePayload; job.* events report a job's outcome and carry a
// JobPayload; container.orphaned carries an OrphanPayload; runtime.health
// (one per change of the running engine's health) a HealthPayload.
const (
	EventRuntimeRunning    EventType = "runtime.running"
	EventRuntimeStopped    EventType = "runtime.stopped"
	EventRuntimeRemoved    EventType = "runtime.removed"
	EventJobSucceeded      EventType = "job.succeeded"
	EventJobFailed         EventType = "job.failed"
	EventJobCancelled      EventType = "job.cancelled"
	EventContainerOrphaned EventType = "container.orphaned"
	EventRuntimeHealth     EventType = "runtime.health"
)

// Position is a place in the outbox: the (xid, id) of an event. Events
// are delivered in Position order; the zero Position is the beginning.
type Position struct {
	Xid uint64 `json:"xid"`
	ID  int64  `json:"id"`
}

// Event is one outbox row. ID is stable: a consumer that may see an event
// twice (after a crash between processing and acknowledging) deduplicates
// with it.
type Event struct {
	ID        int64           `json:"id"`
	Xid       uint64          `json:"xid"`
	Type      EventType       `json:"type"`
	HostID    string          `json:"host_id"`
	GameID    string          `json:"game_id"`
	JobID     int64           `json:"job_id,omitempty"`
	Payload   json.RawMessage `json:"payload"`
	CreatedAt time.Time       `json:"created_at"`
}

// Position returns the event's place in the outbox.
func (e Event) Position() Position { return Position{Xid: e.Xid, ID: e.ID} }

func eventOf(e db.StoredEvent) Event {
	return Event{
		ID: e.ID, Xid: e.Xid, Type: EventType(e.Type), HostID: e.HostID, GameID: e.GameID,
		JobID: e.JobID, Payload: json.RawMessage(e.Payload), CreatedAt: e.CreatedAt,
	}
}

func eventsOf(evs []db.StoredEvent) []Event {
	out := make([]Event, len(evs))
	for i, e := range evs {
		out[i] = eventOf(e)
	}
	return out
}

// Reason says what caused a runtime transition, whichever part of the
// agent recorded it: a job asked for it (job_start, job_stop, job_restart,
// job_remove, job_change_image; the event then names the job), or no job
// did (observed_start, observed_die, observed_destroy: a Docker event;
// reconcile_exit, reconcile_start, reconcile_dispose: a relist; cleanup:
// the sweeper). See the README's "Event types and payloads".
type Reason string

// RuntimePayload is the payload of runtime.* events.
type RuntimePayload struct {
	GameID string `json:"game_id"`
	HostID string `json:"host_id"`
	// FromStatus is empty when the record was created.
	FromStatus RecordStatus `json:"from_status,omitempty"`
	ToStatus   RecordStatus `json:"to_status"`
	Reason     Reason       `json:"reason"`
	// ContainerID is the container concerned; for runtime.removed, the
	// removed one.
	ContainerID string `json:"container_id,omitempty"`
	ImageRef    string `json:"image_ref,omitempty"`
	// ImageDigest is the digest of the image the container runs, when
	// known.
	ImageDigest string `json:"image_digest,omitempty"`
	// ExitCode is the engine's exit code, when known.
	ExitCode *int `json:"exit_code,omitempty"`
	// OOM reports that Docker said the engine was killed for memory.
	OOM bool `json:"oom,omitempty"`
	// RequestedByJob and JobID are set with a job_* reason only: the job
	// that asked for the transition.
	RequestedByJob bool      `json:"requested_by_job,omitempty"`
	JobID          *int64    `json:"job_id,omitempty"`
	At             time.Time `json:"at"`
	// Record is the record after the transition.
	Record Record `json:"record"`
}

// JobPayload is the payload of job.* events.
type JobPayload struct {
	JobID  int64     `json:"job_id"`
	GameID string    `json:"game_id"`
	HostID string    `json:"host_id"`
	Kind   Kind      `json:"kind"`
	Status JobStatus `json:"status"`
	// Attempt is the number of attempts made.
	Attempt int    `json:"attempt"`
	Error   string `json:"error,omitempty"`
	// ImageDigest is, for a succeeded start, change_image or pull job,
	// the registry digest of the image it ran or pulled, when known.
	ImageDigest string `json:"image_digest,omitempty"`
}

// OrphanPayload is the payload of container.orphaned events: a container
// carrying the agent's labels that no live record owns.
type OrphanPayload struct {
	HostID        string    `json:"host_id"`
	GameID        string    `json:"game_id,omitempty"`
	ContainerID   string    `json:"container_id"`
	ContainerName string    `json:"container_name,omitempty"`
	At            time.Time `json:"at"`
}

// HealthPayload is the payload of runtime.health events. Health values:
// none, starting, healthy, unhealthy; reason: observed_health (Docker's
// health_status event) or reconcile_health (a relist's inspect).
type HealthPayload struct {
	GameID      string    `json:"game_id"`
	HostID      string    `json:"host_id"`
	ContainerID string    `json:"container_id"`
	FromHealth  string    `json:"from_health"`
	Health      string    `json:"health"`
	Reason      string    `json:"reason"`
	At          time.Time `json:"at"`
}

// HealthPayload decodes the payload of a runtime.health event.
func (e Event) HealthPayload() (HealthPayload, error) {
	var p HealthPayload
	return p, e.decode(e.Type == EventRuntimeHealth, string(EventRuntimeHealth), &p)
}

// IsRuntime reports a runtime.* event.
func (e Event) IsRuntime() bool {
	return e.Type == EventRuntimeRunning || e.Type == EventRuntimeStopped || e.Type == EventRuntimeRemoved
}

// IsJob reports a job.* event.
func (e Event) IsJob() bool {
	return e.Type == EventJobSucceeded || e.Type == EventJobFailed || e.Type == EventJobCancelled
}

// RuntimePayload decodes the payload of a runtime.* event.
func (e Event) RuntimePayload() (RuntimePayload, error) {
	var p RuntimePayload
	return p, e.decode(e.IsRuntime(), "runtime.*", &p)
}

// JobPayload decodes the payload of a job.* event.
func (e Event) JobPayload() (JobPayload, error) {
	var p JobPayload
	return p, e.decode(e.IsJob(), "job.*", &p)
}

// OrphanPayload decodes the payload of a container.orphaned event.
func (e Event) OrphanPayload() (OrphanPayload, error) {
	var p OrphanPayload
	return p, e.decode(e.Type == EventContainerOrphaned, string(EventContainerOrphaned), &p)
}

func (e Event) decode(ok bool, want string, v any) error {
	if !ok {
		return fmt.Errorf("event %d is a %s event, not %s", e.ID, e.Type, want)
	}
	if err := json.Unmarshal(e.Payload, v); err != nil {
		return fmt.Errorf("event %d (%s): decode payload: %w", e.ID, e.Type, err)
	}
	return nil
}

// ReadEvents returns up to limit events after pos, in delivery order,
// without a cursor of its own: the caller keeps the position. Only
// events of finished transactions are returned, so resuming after the
// last one returned never skips an event that commits later.
func (c *Client) ReadEvents(ctx context.Context, after Position, limit int) ([]Event, error) {
	evs, err := c.store.ReadOutbox(ctx, db.Position(after), limit)
	if err != nil {
		return nil, err
	}
	return eventsOf(evs), nil
}

// TailEvents returns the last n readable events, oldest first; following
// on from the last of them (or the zero Position when none) misses
// nothing.
func (c *Client) TailEvents(ctx context.Context, n int) ([]Event, error) {
	evs, err := c.store.TailOutbox(ctx, n)
	if err != nil {
		return nil, err
	}
	return eventsOf(evs), nil
}

// ConsumerOptions tune a Consumer; zero values take the defaults.
type ConsumerOptions struct {
	// BatchSize bounds one read (default 100).
	BatchSize int
	// PollInterval bounds how long Run waits for a notification before
	// reading anyway (default 2s).
	PollInterval time.Duration
	// NoListen makes Run poll only, for connections through a
	// transaction pooler where LISTEN does not work.
	NoListen bool
	// OnError is told of database errors that Run rides out.
	OnError func(error)
}

// Consumer reads the outbox for a named consumer whose position is kept
// in the database (table outbox_consumers). Each event is delivered at
// least once and, as long as the consumer acknowledges what it has
// processed, once: a consumer that stops before acknowledging an event
// gets it again (same ID); an acknowledged event never comes again.
// Events come in (xid, id) order: a game's events in commit order.
type Consumer struct {
	c *db.Consumer
}

// Consumer registers name, if new, at the beginning of the outbox and
// returns a consumer positioned after its last acknowledged event. While
// a name is registered, retention keeps every event it has not
// acknowledged: unregister names that are no longer used.
func (c *Client) Consumer(ctx context.Context, name string, opts ConsumerOptions) (*Consumer, error) {
	dc, err := c.store.OpenConsumer(ctx, name, db.ConsumerOptions{
		BatchSize: opts.BatchSize, PollInterval: opts.PollInterval, NoListen: opts.NoListen, OnError: opts.OnError,
	})
	if err != nil {
		return nil, err
	}
	return &Consumer{c: dc}, nil
}

// Name returns the consumer's name.
func (c *Consumer) Name() string { return c.c.Name() }

// Position returns the position of the last event handed out.
func (c *Consumer) Position() Position { return Position(c.c.Position()) }

// Fetch returns up to limit events (BatchSize when limit <= 0) after the
// last one handed out, possibly none. Acknowledge them with Ack once
// processed. Fetch does not keep another process from reading the same
// name: give each process a name, or use Run.
func (c *Consumer) Fetch(ctx context.Context, limit int) ([]Event, error) {
	evs, err := c.c.Fetch(ctx, limit)
	if err != nil {
		return nil, err
	}
	return eventsOf(evs), nil
}

// Ack records durably that every event up to and including ev is
// processed. The position never moves backwards.
func (c *Consumer) Ack(ctx context.Context, ev Event) error {
	return translate(c.c.Ack(ctx, db.Position(ev.Position())))
}

// Rewind makes the next Fetch hand out again every event not yet
// acknowledged.
func (c *Consumer) Rewind(ctx context.Context) error { return translate(c.c.Rewind(ctx)) }

// Run calls handle for each event, in order, and acknowledges the event
// when handle returns nil. It wakes on LISTEN rtm_outbox and polls every
// PollInterval as a fallback. It returns nil when ctx ends, and the
// handler's error (wrapped) when handle fails: that event was not
// acknowledged and comes again with the next Run. One process at a time
// delivers a name's events: a second Run of the same name waits until
// the first stops, then takes over from the acknowledged position.
func (c *Consumer) Run(ctx context.Context, handle func(ctx context.Context, ev Event) error) error {
	err := c.c.Run(ctx, func(ctx context.Context, ev db.StoredEvent) error { return handle(ctx, eventOf(ev)) })
	var he *db.HandlerError
	if errors.As(err, &he) {
		return fmt.Errorf("outbox consumer %q: event %d (%s): %w", he.Consumer, he.Event.ID, he.Event.Type, he.Err)
	}
	return translate(err)
}

// ConsumerInfo is a registered consumer and what it has acknowledged.
type ConsumerInfo struct {
	Name      string    `json:"name"`
	Acked     Position  `json:"acked"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Consumers lists the registered consumers by name.
func (c *Client) Consumers(ctx context.Context) ([]ConsumerInfo, error) {
	cs, err := c.store.ListOutboxConsumers(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]ConsumerInfo, len(cs))
	for i, x := range cs {
		out[i] = ConsumerInfo{Name: x.Name, Acked: Position(x.Position), UpdatedAt: x.UpdatedAt}
	}
	return out, nil
}

// UnregisterConsumer removes a consumer name, so that retention no
// longer keeps events for it; errors.Is ErrNotFound for an unknown name.
func (c *Client) UnregisterConsumer(ctx context.Context, name string) error {
	return translate(c.store.UnregisterOutboxConsumer(ctx, name))
}
