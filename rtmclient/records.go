package rtmclient

import (
	"context"
	"time"

	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/domain/runtime"
)

// RecordStatus is a runtime record's status.
type RecordStatus string

// The record statuses; removed is terminal.
const (
	RecordRunning RecordStatus = "running"
	RecordStopped RecordStatus = "stopped"
	RecordRemoved RecordStatus = "removed"
)

// Record is a game's runtime record: where and how its engine runs. It is
// also the "record" of runtime event payloads, with the same JSON.
type Record struct {
	GameID string       `json:"game_id"`
	HostID string       `json:"host_id"`
	Status RecordStatus `json:"status"`
	// Health is what Docker's health check says of the running engine
	// (none, starting, healthy, unhealthy); set by GetRecord, absent from
	// event payloads and lists.
	Health             string `json:"health,omitempty"`
	CurrentContainerID string `json:"current_container_id,omitempty"`
	CurrentImageRef    string `json:"current_image_ref,omitempty"`
	// CurrentImageDigest is the registry digest of the image the
	// container runs ("<repository>@<digest>" pulls exactly it), when
	// known.
	CurrentImageDigest string     `json:"current_image_digest,omitempty"`
	EngineEndpoint     string     `json:"engine_endpoint"`
	StatePath          string     `json:"state_path"`
	DockerNetwork      string     `json:"docker_network"`
	StartedAt          *time.Time `json:"started_at,omitempty"`
	StoppedAt          *time.Time `json:"stopped_at,omitempty"`
	RemovedAt          *time.Time `json:"removed_at,omitempty"`
	LastOpAt           time.Time  `json:"last_op_at"`
	CreatedAt          time.Time  `json:"created_at"`
}

func recordOf(r runtime.RuntimeRecord) Record {
	return Record{
		GameID: r.GameID, HostID: r.HostID, Status: RecordStatus(r.Status),
		CurrentContainerID: r.CurrentContainerID, CurrentImageRef: r.CurrentImageRef,
		CurrentImageDigest: r.CurrentImageDigest,
		EngineEndpoint:     r.EngineEndpoint, StatePath: r.StatePath, DockerNetwork: r.DockerNetwork,
		StartedAt: r.StartedAt, StoppedAt: r.StoppedAt, RemovedAt: r.RemovedAt,
		LastOpAt: r.LastOpAt, CreatedAt: r.CreatedAt,
	}
}

// GetRecord returns a game's record, or an error that errors.Is
// ErrNotFound when the game has none (no start job has run yet).
func (c *Client) GetRecord(ctx context.Context, gameID string) (Record, error) {
	r, err := c.store.GetRecord(ctx, gameID)
	if err != nil {
		return Record{}, translate(err)
	}
	rec := recordOf(r)
	h, err := c.store.Health(ctx, gameID)
	if err != nil {
		return Record{}, translate(err)
	}
	rec.Health = string(h)
	return rec, nil
}

// RecordFilter selects records; empty fields match all.
type RecordFilter struct {
	HostID string
	Status RecordStatus
	// AfterGameID pages: only games after it in id order.
	AfterGameID string
	// Limit bounds the result (default 1000).
	Limit int
}

// ListRecords returns records by game id.
func (c *Client) ListRecords(ctx context.Context, f RecordFilter) ([]Record, error) {
	rs, err := c.store.ListAllRecords(ctx, db.RecordFilter{
		HostID: f.HostID, Status: runtime.Status(f.Status), AfterGameID: f.AfterGameID, Limit: f.Limit,
	})
	if err != nil {
		return nil, err
	}
	out := make([]Record, len(rs))
	for i, r := range rs {
		out[i] = recordOf(r)
	}
	return out, nil
}

// Host is an agent's registration with its liveness.
type Host struct {
	HostID       string    `json:"host_id"`
	AgentID      string    `json:"agent_id"`
	AgentVersion string    `json:"agent_version"`
	StartedAt    time.Time `json:"started_at"`
	HeartbeatAt  time.Time `json:"heartbeat_at"`
	// Down reports a heartbeat older than the threshold asked for; the
	// host's jobs wait for it (no other host takes them).
	Down       bool  `json:"down"`
	QueuedJobs int64 `json:"queued_jobs"`
	// CheckedAt is the database's time of the check.
	CheckedAt time.Time `json:"checked_at"`
}

// HeartbeatAge is how old the heartbeat was at CheckedAt.
func (h Host) HeartbeatAge() time.Duration { return h.CheckedAt.Sub(h.HeartbeatAt) }

// ListHosts returns every registered host by id, down when its heartbeat
// is older than downAfter (for instance three heartbeat intervals).
func (c *Client) ListHosts(ctx context.Context, downAfter time.Duration) ([]Host, error) {
	hs, err := c.store.ListHostsWithLiveness(ctx, downAfter)
	if err != nil {
		return nil, err
	}
	out := make([]Host, len(hs))
	for i, h := range hs {
		out[i] = Host{
			HostID: h.HostID, AgentID: h.AgentID, AgentVersion: h.AgentVersion, StartedAt: h.StartedAt,
			HeartbeatAt: h.HeartbeatAt, Down: h.Down, QueuedJobs: h.QueuedJobs, CheckedAt: h.CheckedAt,
		}
	}
	return out, nil
}
