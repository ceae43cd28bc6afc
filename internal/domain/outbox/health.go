package outbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/galaxy/rtmanager/internal/domain/runtime"
)

// HealthReason says how the agent learnt a change of health.
type HealthReason string

const (
	// HealthObserved: Docker's health_status event.
	HealthObserved HealthReason = "observed_health"
	// HealthReconciled: a relist's inspect of the container.
	HealthReconciled HealthReason = "reconcile_health"
)

// HealthPayload is the payload of runtime.health events: one per change
// of the running engine's health, never one per probe.
//
//	{
//	  "game_id": "g1", "host_id": "host-a", "container_id": "4f2a…",
//	  "from_health": "starting", "health": "healthy",
//	  "reason": "observed_health",
//	  "at": "2026-03-01T12:00:00Z"
//	}
type HealthPayload struct {
	GameID      string         `json:"game_id"`
	HostID      string         `json:"host_id"`
	ContainerID string         `json:"container_id"`
	FromHealth  runtime.Health `json:"from_health"`
	Health      runtime.Health `json:"health"`
	Reason      HealthReason   `json:"reason"`
	At          time.Time      `json:"at"`
}

// ForHealth returns the event reporting a change of health.
func ForHealth(p HealthPayload) (Event, error) {
	if p.GameID == "" || p.HostID == "" || p.ContainerID == "" || p.At.IsZero() {
		return Event{}, errors.New("outbox: a health change needs a game, a host, a container and a time")
	}
	if !p.Health.IsKnown() || !p.FromHealth.IsKnown() || p.Health == p.FromHealth {
		return Event{}, fmt.Errorf("outbox: health change %q -> %q of game %q: not a change of known values", p.FromHealth, p.Health, p.GameID)
	}
	if p.Reason != HealthObserved && p.Reason != HealthReconciled {
		return Event{}, fmt.Errorf("outbox: health change of game %q: unknown reason %q", p.GameID, p.Reason)
	}
	p.At = p.At.UTC()
	raw, err := json.Marshal(p)
	if err != nil {
		return Event{}, fmt.Errorf("outbox: encode health change of game %q: %w", p.GameID, err)
	}
	return Event{Type: TypeRuntimeHealth, HostID: p.HostID, GameID: p.GameID, Payload: raw}, nil
}
