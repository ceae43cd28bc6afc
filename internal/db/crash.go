package db

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/galaxy/rtmanager/internal/db/dbsqlc"
	"github.com/galaxy/rtmanager/internal/domain/crash"
)

// StoredCrash is a crash report as stored, with its id, the outbox event
// of the exit it goes with and when it was captured.
type StoredCrash struct {
	ID         int64
	EventID    int64
	CapturedAt time.Time
	crash.Report
}

// insertCrashReport writes r in the transaction of the exit's event
// eventID, and prunes the game's reports beyond crash.KeepPerGame.
func insertCrashReport(ctx context.Context, q *dbsqlc.Queries, r crash.Report, eventID int64) error {
	lines := r.Output.Lines
	if lines == nil {
		lines = []crash.Line{}
	}
	body, err := json.Marshal(lines)
	if err != nil {
		return fmt.Errorf("encode crash report of game %s: %w", r.GameID, err)
	}
	var code *int32
	if r.ExitCode != nil {
		c := int32(*r.ExitCode)
		code = &c
	}
	if _, err := q.InsertCrashReport(ctx, dbsqlc.InsertCrashReportParams{
		GameID: r.GameID, HostID: r.HostID, ContainerID: r.ContainerID, ExitCode: code, Oom: r.OOM,
		ExitedAt: r.ExitedAt.UTC(), Lines: body, Truncated: r.Output.Truncated,
		CaptureError: nullable(r.CaptureError), OutboxID: &eventID,
	}); err != nil {
		return fmt.Errorf("write crash report of game %s: %w", r.GameID, err)
	}
	if _, err := q.PruneCrashReports(ctx, dbsqlc.PruneCrashReportsParams{GameID: r.GameID, Keep: crash.KeepPerGame}); err != nil {
		return fmt.Errorf("prune crash reports of game %s: %w", r.GameID, err)
	}
	return nil
}

// CrashReports returns the game's last crash reports, newest first, at
// most limit of them.
func (s *Store) CrashReports(ctx context.Context, gameID string, limit int) ([]StoredCrash, error) {
	rows, err := s.q.ListCrashReports(ctx, dbsqlc.ListCrashReportsParams{GameID: gameID, MaxRows: int32(limit)})
	if err != nil {
		return nil, fmt.Errorf("read crash reports of game %s: %w", gameID, err)
	}
	out := make([]StoredCrash, 0, len(rows))
	for _, r := range rows {
		c := StoredCrash{ID: r.ID, CapturedAt: r.CapturedAt.UTC(), Report: crash.Report{
			HostID: r.HostID, GameID: r.GameID, ContainerID: r.ContainerID, OOM: r.Oom,
			ExitedAt: r.ExitedAt.UTC(), CaptureError: deref(r.CaptureError),
			Output: crash.Output{Truncated: r.Truncated},
		}}
		if r.OutboxID != nil {
			c.EventID = *r.OutboxID
		}
		if r.ExitCode != nil {
			code := int(*r.ExitCode)
			c.ExitCode = &code
		}
		if err := json.Unmarshal(r.Lines, &c.Output.Lines); err != nil {
			return nil, fmt.Errorf("decode crash report %d of game %s: %w", r.ID, gameID, err)
		}
		out = append(out, c)
	}
	return out, nil
}
