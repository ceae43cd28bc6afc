package db

import (
	"context"
	"fmt"
	"time"
)

// HostLiveness is a host's registration as seen at CheckedAt (the
// database's clock, which also writes heartbeats).
type HostLiveness struct {
	Host
	// Down reports a heartbeat older than the threshold asked for. The
	// host's jobs stay queued for it: claims are by host id, and no other
	// host takes them over.
	Down bool
	// QueuedJobs is the number of the host's jobs waiting to be claimed.
	QueuedJobs int64
	CheckedAt  time.Time
}

// HeartbeatAge is how old the heartbeat was at CheckedAt.
func (h HostLiveness) HeartbeatAge() time.Duration { return h.CheckedAt.Sub(h.HeartbeatAt) }

// ListHostsWithLiveness returns every registered host by id, down when its
// heartbeat is older than threshold, with the count of its queued jobs.
func (s *Store) ListHostsWithLiveness(ctx context.Context, threshold time.Duration) ([]HostLiveness, error) {
	if threshold <= 0 {
		return nil, fmt.Errorf("list hosts: the liveness threshold must be positive, got %s", threshold)
	}
	rows, err := s.q.ListHostsWithLiveness(ctx, threshold.Milliseconds())
	if err != nil {
		return nil, fmt.Errorf("list hosts: %w", err)
	}
	out := make([]HostLiveness, len(rows))
	for i, r := range rows {
		out[i] = HostLiveness{Host: hostFromRow(r.Host), Down: r.Down, QueuedJobs: r.QueuedJobs, CheckedAt: r.CheckedAt.UTC()}
	}
	return out, nil
}
