package db

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/galaxy/rtmanager/internal/db/dbsqlc"
)

// Host is an agent's registration.
type Host struct {
	HostID           string
	AgentID          string
	AgentVersion     string
	StartedAt        time.Time
	HeartbeatAt      time.Time
	EventCursorNanos int64
	CreatedAt        time.Time
	// LeaseExpiresAt is when the active agent's host lease runs out; nil
	// when it was released.
	LeaseExpiresAt *time.Time
}

// ErrHostNotFound reports that no agent ever registered the host.
var ErrHostNotFound = errors.New("host not found")

// RegisterHost records agentID as the agent of hostID.
func (s *Store) RegisterHost(ctx context.Context, hostID, agentID, version string) (Host, error) {
	row, err := s.q.RegisterHost(ctx, dbsqlc.RegisterHostParams{HostID: hostID, AgentID: agentID, AgentVersion: version})
	if err != nil {
		return Host{}, fmt.Errorf("register host %s: %w", hostID, err)
	}
	return hostFromRow(row), nil
}

// Heartbeat refreshes the host's heartbeat; ErrHostTaken when another agent
// has registered for the host since.
func (s *Store) Heartbeat(ctx context.Context, hostID, agentID string) error {
	n, err := s.q.HeartbeatHost(ctx, dbsqlc.HeartbeatHostParams{HostID: hostID, AgentID: agentID})
	if err != nil {
		return fmt.Errorf("heartbeat of host %s: %w", hostID, err)
	}
	if n == 0 {
		return fmt.Errorf("heartbeat of host %s by agent %s: %w", hostID, agentID, ErrHostTaken)
	}
	return nil
}

// GetHost returns a host's registration, or ErrHostNotFound.
func (s *Store) GetHost(ctx context.Context, hostID string) (Host, error) {
	row, err := s.q.GetHost(ctx, hostID)
	if errors.Is(err, pgx.ErrNoRows) {
		return Host{}, fmt.Errorf("host %s: %w", hostID, ErrHostNotFound)
	}
	if err != nil {
		return Host{}, fmt.Errorf("read host %s: %w", hostID, err)
	}
	return hostFromRow(row), nil
}

// AdvanceEventCursor stores the daemon time of the last applied Docker
// event; it never moves the cursor backwards.
func (s *Store) AdvanceEventCursor(ctx context.Context, hostID string, nanos int64) error {
	if err := s.q.AdvanceEventCursor(ctx, dbsqlc.AdvanceEventCursorParams{HostID: hostID, CursorNanos: nanos}); err != nil {
		return fmt.Errorf("advance event cursor of host %s: %w", hostID, err)
	}
	return nil
}

func hostFromRow(r dbsqlc.Host) Host {
	return Host{
		HostID:           r.HostID,
		AgentID:          r.AgentID,
		AgentVersion:     r.AgentVersion,
		StartedAt:        r.StartedAt.UTC(),
		HeartbeatAt:      r.HeartbeatAt.UTC(),
		EventCursorNanos: r.EventCursorNanos,
		CreatedAt:        r.CreatedAt.UTC(),
		LeaseExpiresAt:   utcPtr(r.LeaseExpiresAt),
	}
}

// CheckSchema reports an error when the database's schema is not the one
// this build expects: another agent of a newer version migrated it, or a
// migration failed half-way.
func (s *Store) CheckSchema(ctx context.Context) error {
	v, err := s.q.SchemaVersion(ctx)
	if err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if v.Dirty || uint(v.Version) != SchemaVersion {
		return fmt.Errorf("schema at version %d (dirty=%v) but this agent needs %d", v.Version, v.Dirty, SchemaVersion)
	}
	return nil
}
