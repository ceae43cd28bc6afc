package db

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/galaxy/rtmanager/internal/db/dbsqlc"
	"github.com/galaxy/rtmanager/internal/domain/outbox"
	"github.com/galaxy/rtmanager/internal/domain/runtime"
)

// HealthChange is the outcome of ObserveHealth.
type HealthChange struct {
	From, To runtime.Health
	// Changed reports that the health was written with its event.
	Changed bool
	EventID int64
}

// ObserveHealth records that containerID, the running container of
// gameID on hostID, has health h, under the game's lock: when the record
// is running that container and its health differs, it is written with
// one runtime.health event (reason says how it was learnt). Anything else
// (another container, a stopped record, the same health: a probe that
// changes nothing) writes nothing.
func (s *Store) ObserveHealth(ctx context.Context, hostID, gameID, containerID string, h runtime.Health, reason outbox.HealthReason, at time.Time) (HealthChange, error) {
	if !h.IsKnown() {
		return HealthChange{}, fmt.Errorf("health of game %s: unknown value %q", gameID, h)
	}
	var ch HealthChange
	err := s.inGameTx(ctx, gameID, func(q *dbsqlc.Queries) error {
		row, err := q.GetRecordHealth(ctx, gameID)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read health of game %s: %w", gameID, err)
		}
		ch.From, ch.To = runtime.Health(row.Health), h
		if row.Status != string(runtime.StatusRunning) || deref(row.CurrentContainerID) != containerID || ch.From == h {
			return nil
		}
		n, err := q.SetRecordHealth(ctx, dbsqlc.SetRecordHealthParams{Health: string(h), GameID: gameID, HostID: hostID, ContainerID: &containerID})
		if err != nil {
			return fmt.Errorf("write health of game %s: %w", gameID, err)
		}
		if n == 0 {
			return nil // another host's record
		}
		ev, err := outbox.ForHealth(outbox.HealthPayload{GameID: gameID, HostID: hostID, ContainerID: containerID,
			FromHealth: ch.From, Health: h, Reason: reason, At: at})
		if err != nil {
			return err
		}
		if ch.EventID, err = insertEvent(ctx, q, ev); err != nil {
			return err
		}
		ch.Changed = true
		return nil
	})
	if err != nil {
		return HealthChange{}, err
	}
	return ch, nil
}

// Health returns the health of gameID's record.
func (s *Store) Health(ctx context.Context, gameID string) (runtime.Health, error) {
	row, err := s.q.GetRecordHealth(ctx, gameID)
	if err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return "", runtime.ErrNotFound
		}
		return "", fmt.Errorf("read health of game %s: %w", gameID, err)
	}
	return runtime.Health(row.Health), nil
}

// RunningHealth returns the health of every running record of hostID, by
// game: a relist compares it with what Docker says before it writes.
func (s *Store) RunningHealth(ctx context.Context, hostID string) (map[string]runtime.Health, error) {
	rows, err := s.q.ListRunningHealth(ctx, hostID)
	if err != nil {
		return nil, fmt.Errorf("read health of host %s: %w", hostID, err)
	}
	out := make(map[string]runtime.Health, len(rows))
	for _, r := range rows {
		out[r.GameID] = runtime.Health(r.Health)
	}
	return out, nil
}
