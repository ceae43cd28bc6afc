// Package liveness keeps this agent's host row alive and says which hosts
// are down.
//
// The agent's heartbeat is its host-lease renewal (agent/leader), which
// also refreshes heartbeat_at; Heartbeater is the heartbeat alone, for a
// process that registered with db.Store.RegisterHost. A host whose
// heartbeat is older than a threshold is down: the CLI shows it
// (db.Store.ListHostsWithLiveness), and RegisterFleetMetrics exports the
// fleet's queue depth per host and the hosts without a live agent. Nothing is taken over
// from a down host: jobs are claimed by host id, so its queued jobs wait
// for it to come back, and its containers are its own.
package liveness

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/galaxy/rtmanager/internal/db"
)

// DownAfterBeats is how many heartbeat intervals may pass before a host
// counts as down by DefaultThreshold.
const DownAfterBeats = 3

// DefaultThreshold is the liveness threshold that fits a heartbeat
// interval: a host is down after missing DownAfterBeats heartbeats.
func DefaultThreshold(interval time.Duration) time.Duration { return DownAfterBeats * interval }

// Heartbeater refreshes one host's heartbeat for the agent that registered
// it (db.Store.RegisterHost).
type Heartbeater struct {
	store    *db.Store
	hostID   string
	agentID  string
	interval time.Duration
	log      *slog.Logger
	last     atomic.Int64 // unix nanoseconds of the last successful beat
}

// NewHeartbeater returns a heartbeater for agentID's registration of
// hostID; log nil means slog.Default().
func NewHeartbeater(store *db.Store, hostID, agentID string, interval time.Duration, log *slog.Logger) (*Heartbeater, error) {
	var errs []error
	if store == nil {
		errs = append(errs, errors.New("heartbeater: no store"))
	}
	if strings.TrimSpace(hostID) == "" || strings.TrimSpace(agentID) == "" {
		errs = append(errs, errors.New("heartbeater: host id and agent id must not be empty"))
	}
	if interval <= 0 {
		errs = append(errs, fmt.Errorf("heartbeater: RTM_HEARTBEAT_INTERVAL must be positive, got %s", interval))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	return &Heartbeater{
		store: store, hostID: hostID, agentID: agentID, interval: interval,
		log: log.With("component", "liveness", "host_id", hostID),
	}, nil
}

// Beat refreshes the heartbeat once. The error wraps db.ErrHostTaken when
// another agent has registered for the host since.
func (h *Heartbeater) Beat(ctx context.Context) error {
	if err := h.store.Heartbeat(ctx, h.hostID, h.agentID); err != nil {
		return err
	}
	h.last.Store(time.Now().UnixNano())
	return nil
}

// LastBeat returns when the last heartbeat succeeded (the agent's clock),
// zero before the first.
func (h *Heartbeater) LastBeat() time.Time {
	n := h.last.Load()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// Run beats at once and then every interval until ctx is done (it then
// returns nil) or another agent registers for the host: then it returns an
// error wrapping db.ErrHostTaken, and this agent must stop, since two
// agents must not serve one host. Other failures are logged and retried at
// the next interval.
func (h *Heartbeater) Run(ctx context.Context) error {
	tick := time.NewTicker(h.interval)
	defer tick.Stop()
	for {
		if err := h.Beat(ctx); err != nil {
			if errors.Is(err, db.ErrHostTaken) {
				return fmt.Errorf("%w: another agent registered for host %s; two agents must not serve one host", err, h.hostID)
			}
			if ctx.Err() != nil {
				return nil
			}
			h.log.Warn("heartbeat failed; retrying at the next interval", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}
