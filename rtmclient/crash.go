package rtmclient

import (
	"context"
	"time"
)

// CrashLine is one line an engine printed, as the agent stored it: valid
// UTF-8, control characters escaped (\xNN, \uNNNN), a backslash as \\.
// It is the engine's untrusted text: display it, never interpret it.
type CrashLine struct {
	Stream string `json:"stream"` // stdout or stderr
	Text   string `json:"text"`
}

// CrashReport is one exit of a game's engine that no job asked for (an
// observed die, a reconciled exit, an OOM kill), with the last lines of
// its output, captured before the exit was recorded. The agent keeps the
// last ten of each game.
type CrashReport struct {
	ID          int64       `json:"id"`
	GameID      string      `json:"game_id"`
	HostID      string      `json:"host_id"`
	ContainerID string      `json:"container_id"`
	ExitCode    *int        `json:"exit_code,omitempty"`
	OOM         bool        `json:"oom"`
	ExitedAt    time.Time   `json:"exited_at"`
	CapturedAt  time.Time   `json:"captured_at"`
	Lines       []CrashLine `json:"lines"`
	// Truncated reports that older output (or the start of a long line)
	// was left out.
	Truncated bool `json:"truncated"`
	// CaptureError says why the output could not be read, if it could not.
	CaptureError string `json:"capture_error,omitempty"`
	// EventID is the runtime.stopped event of the exit.
	EventID int64 `json:"event_id,omitempty"`
}

// CrashReports returns the game's last crash reports, newest first, at
// most limit (1..100; other values mean 10).
func (c *Client) CrashReports(ctx context.Context, gameID string, limit int) ([]CrashReport, error) {
	if limit < 1 || limit > 100 {
		limit = 10
	}
	rs, err := c.store.CrashReports(ctx, gameID, limit)
	if err != nil {
		return nil, err
	}
	out := make([]CrashReport, len(rs))
	for i, r := range rs {
		lines := make([]CrashLine, len(r.Output.Lines))
		for j, l := range r.Output.Lines {
			lines[j] = CrashLine{Stream: string(l.Stream), Text: l.Text}
		}
		out[i] = CrashReport{
			ID: r.ID, GameID: r.GameID, HostID: r.HostID, ContainerID: r.ContainerID,
			ExitCode: r.ExitCode, OOM: r.OOM, ExitedAt: r.ExitedAt, CapturedAt: r.CapturedAt,
			Lines: lines, Truncated: r.Output.Truncated, CaptureError: r.CaptureError, EventID: r.EventID,
		}
	}
	return out, nil
}
