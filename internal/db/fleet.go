package db

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/galaxy/rtmanager/internal/db/dbsqlc"
)

// ErrLeaseHeld reports that another agent holds the host's lease.
var ErrLeaseHeld = errors.New("host lease held by another agent")

// HostLease is a host row as its lease holder sees it.
type HostLease struct {
	Host
	// ExpiresAt is when the lease ends unless renewed (the database's
	// clock).
	ExpiresAt time.Time
	// RequeuedJobs counts the running jobs of a dead predecessor given back
	// to the queue by TakeOverHostLease.
	RequeuedJobs int64
}

// AcquireHostLease makes agentID the host's active agent for ttl when the
// lease is free, expired or already agentID's; ErrLeaseHeld otherwise. It
// creates the host row when there is none. One statement, no session
// state: it works through a transaction pooler.
func (s *Store) AcquireHostLease(ctx context.Context, hostID, agentID, version string, ttl time.Duration) (HostLease, error) {
	if ttl <= 0 {
		return HostLease{}, fmt.Errorf("acquire host lease: ttl must be positive, got %s", ttl)
	}
	row, err := s.q.AcquireHostLease(ctx, dbsqlc.AcquireHostLeaseParams{
		HostID: hostID, AgentID: agentID, AgentVersion: version, TtlMs: ttl.Milliseconds(),
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return HostLease{}, fmt.Errorf("host %s: %w", hostID, ErrLeaseHeld)
	}
	if err != nil {
		return HostLease{}, fmt.Errorf("acquire the lease of host %s: %w", hostID, err)
	}
	l := HostLease{Host: hostFromRow(row)}
	if row.LeaseExpiresAt != nil {
		l.ExpiresAt = row.LeaseExpiresAt.UTC()
	}
	return l, nil
}

// RenewHostLease extends agentID's lease of the host by ttl from now (the
// database's clock) and refreshes the heartbeat; ErrLeaseHeld when the
// lease expired or another agent holds it.
func (s *Store) RenewHostLease(ctx context.Context, hostID, agentID string, ttl time.Duration) error {
	n, err := s.q.RenewHostLease(ctx, dbsqlc.RenewHostLeaseParams{HostID: hostID, AgentID: agentID, TtlMs: ttl.Milliseconds()})
	if err != nil {
		return fmt.Errorf("renew the lease of host %s: %w", hostID, err)
	}
	if n == 0 {
		return fmt.Errorf("renew the lease of host %s by agent %s: %w", hostID, agentID, ErrLeaseHeld)
	}
	return nil
}

// ReleaseHostLease gives agentID's lease of the host up, so that a standby
// takes over at its next poll. It reports whether agentID held it.
func (s *Store) ReleaseHostLease(ctx context.Context, hostID, agentID string) (bool, error) {
	n, err := s.q.ReleaseHostLease(ctx, dbsqlc.ReleaseHostLeaseParams{HostID: hostID, AgentID: agentID})
	if err != nil {
		return false, fmt.Errorf("release the lease of host %s: %w", hostID, err)
	}
	return n > 0, nil
}

// HostQueue is the queued jobs of one host.
type HostQueue struct {
	HostID string
	Queued int64
	// Live reports a host with an agent holding an unexpired lease. Jobs
	// of a host without one wait: nothing else claims them.
	Live bool
}

// FleetQueueDepth returns the queued jobs per host (hosts with none are
// left out), registered hosts or not.
func (s *Store) FleetQueueDepth(ctx context.Context) ([]HostQueue, error) {
	rows, err := s.q.FleetQueueDepth(ctx)
	if err != nil {
		return nil, fmt.Errorf("queue depth per host: %w", err)
	}
	out := make([]HostQueue, len(rows))
	for i, r := range rows {
		out[i] = HostQueue{HostID: r.HostID, Queued: r.Queued, Live: r.Live}
	}
	return out, nil
}

// FleetHostsDown counts the registered hosts without a live agent: their
// lease expired or was released.
func (s *Store) FleetHostsDown(ctx context.Context) (int64, error) {
	n, err := s.q.FleetHostsDown(ctx)
	if err != nil {
		return 0, fmt.Errorf("count hosts down: %w", err)
	}
	return n, nil
}

// TakeOverHostLease takes the host's lease from deadAgentID, which the
// caller knows to be dead, without waiting for the lease to expire, and
// requeues the running jobs deadAgentID held (nobody renews their leases);
// ErrLeaseHeld when the lease is no longer deadAgentID's.
func (s *Store) TakeOverHostLease(ctx context.Context, hostID, deadAgentID, agentID, version string, ttl time.Duration) (HostLease, error) {
	if ttl <= 0 {
		return HostLease{}, fmt.Errorf("take over host lease: ttl must be positive, got %s", ttl)
	}
	row, err := s.q.TakeOverHostLease(ctx, dbsqlc.TakeOverHostLeaseParams{
		HostID: hostID, DeadAgentID: deadAgentID, AgentID: agentID, AgentVersion: version, TtlMs: ttl.Milliseconds(),
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return HostLease{}, fmt.Errorf("host %s: %w", hostID, ErrLeaseHeld)
	}
	if err != nil {
		return HostLease{}, fmt.Errorf("take over the lease of host %s: %w", hostID, err)
	}
	l := HostLease{Host: Host{HostID: hostID, AgentID: agentID, AgentVersion: version}, RequeuedJobs: row.Requeued}
	if row.LeaseExpiresAt != nil {
		l.ExpiresAt = row.LeaseExpiresAt.UTC()
		l.LeaseExpiresAt = &l.ExpiresAt
	}
	return l, nil
}
