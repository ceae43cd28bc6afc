package db

import (
	"context"
	"fmt"
	"time"

	"github.com/galaxy/rtmanager/internal/db/dbsqlc"
	"github.com/galaxy/rtmanager/internal/domain/outbox"
)

// Position is a reader's place in the outbox: the (xid, id) of the last
// event it has seen. The zero Position is the beginning.
type Position struct {
	Xid uint64
	ID  int64
}

// StoredEvent is one outbox row.
type StoredEvent struct {
	Position
	Type      outbox.Type
	HostID    string
	GameID    string
	JobID     int64
	Payload   []byte
	CreatedAt time.Time
}

// ReadOutbox returns up to limit events after pos, in (xid, id) order, only
// from transactions that have all finished: a later call never returns an
// event that sorts before one already returned.
func (s *Store) ReadOutbox(ctx context.Context, after Position, limit int) ([]StoredEvent, error) {
	rows, err := s.q.ReadOutbox(ctx, dbsqlc.ReadOutboxParams{AfterXid: after.Xid, AfterID: after.ID, MaxEvents: int32(limit)})
	if err != nil {
		return nil, fmt.Errorf("read outbox after %d/%d: %w", after.Xid, after.ID, err)
	}
	out := make([]StoredEvent, len(rows))
	for i, r := range rows {
		var jobID int64
		if r.JobID != nil {
			jobID = *r.JobID
		}
		out[i] = StoredEvent{
			Position:  Position{Xid: r.Xid, ID: r.ID},
			Type:      outbox.Type(r.Type),
			HostID:    r.HostID,
			GameID:    r.GameID,
			JobID:     jobID,
			Payload:   r.Payload,
			CreatedAt: r.CreatedAt.UTC(),
		}
	}
	return out, nil
}
