package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/moby/moby/client"
)

// Event is one Docker container event.
type Event struct {
	ID         string // container id
	Action     string // start, die, oom, destroy, …
	Attributes map[string]string
	TimeNano   int64 // daemon clock, nanoseconds since the Unix epoch
}

// GameID returns the game label carried by the event.
func (e Event) GameID() string { return e.Attributes[LabelGame] }

// ExitCode returns the exitCode attribute of a die event.
func (e Event) ExitCode() (int, bool) {
	s, ok := e.Attributes["exitCode"]
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	return n, err == nil
}

// EventsOptions selects the events to stream.
type EventsOptions struct {
	// SinceNano replays events from the daemon's ring buffer starting at
	// this daemon time (inclusive, so replays contain duplicates). 0 streams
	// only new events.
	SinceNano int64
	// UntilNano ends the stream at this daemon time; 0 means never.
	UntilNano int64
	// Actions to receive; nil means DefaultEventActions().
	Actions []string
}

// DefaultEventActions returns the container actions the agent maps onto
// record transitions, and health_status: the daemon matches that one as a
// prefix ("health_status: healthy"), so health changes come through the
// server-side filter while the probes' exec_* events (three per probe) do
// not.
func DefaultEventActions() []string {
	return []string{"start", "die", "oom", "destroy", "health_status"}
}

// HealthStatus returns the health an event of action
// "health_status: <status>" reports, and whether it is one.
func (e Event) HealthStatus() (string, bool) {
	s, ok := strings.CutPrefix(e.Action, "health_status:")
	if !ok {
		return "", false
	}
	return strings.TrimSpace(s), true
}

// Events implements Engine. It subscribes to the daemon's events, filtered
// by the daemon to containers with our managed label and host id and to
// opts.Actions, and calls handle for each event, in stream order, on the
// calling goroutine.
//
// handle must return quickly — copy the event into a bounded buffer and do
// the work elsewhere: the daemon drops events for a subscriber that does not
// read within 100 ms.
//
// Events blocks until: ctx is done (returns ctx's error, wrapped); the
// stream ends (ErrStreamEnded: daemon stopped/restarted; the caller should
// relist and resubscribe); a transport error occurs (wrapped); or, when
// opts.UntilNano is set, the daemon ends the stream at that time (nil).
// The stream has no heartbeat; a caller that fears a silent hang should
// resubscribe periodically with SinceNano set to the last event's TimeNano.
func (d *Docker) Events(ctx context.Context, opts EventsOptions, handle func(Event)) error {
	actions := opts.Actions
	if actions == nil {
		actions = DefaultEventActions()
	}
	f := d.labelFilters().Add("type", "container").Add("event", actions...)
	lo := client.EventsListOptions{Filters: f}
	if opts.SinceNano > 0 {
		lo.Since = nanoTimestamp(opts.SinceNano)
	}
	if opts.UntilNano > 0 {
		lo.Until = nanoTimestamp(opts.UntilNano)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	res := d.cli.Events(ctx, lo)
	for {
		select {
		case m := <-res.Messages:
			ev := Event{
				ID:         m.Actor.ID,
				Action:     string(m.Action),
				Attributes: maps0(m.Actor.Attributes),
				TimeNano:   m.TimeNano,
			}
			if ev.TimeNano == 0 {
				ev.TimeNano = m.Time * int64(time.Second)
			}
			handle(ev)
		case err := <-res.Err:
			switch {
			case err == nil, errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
				if opts.UntilNano > 0 && !errors.Is(err, io.ErrUnexpectedEOF) {
					return nil // the daemon ends the stream at Until
				}
				return fmt.Errorf("docker events: %w (%w)", ErrStreamEnded, cmp.Or(err, io.EOF))
			case ctx.Err() != nil:
				return fmt.Errorf("docker events: %w", ctx.Err())
			default:
				return fmt.Errorf("docker events: %w", err)
			}
		}
	}
}

func nanoTimestamp(n int64) string {
	return fmt.Sprintf("%d.%09d", n/int64(time.Second), n%int64(time.Second))
}
