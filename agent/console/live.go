package console

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/db/dbsqlc"
)

// jobsNotifyChannel is where the jobs table's insert trigger notifies.
const jobsNotifyChannel = "rtm_jobs"

// liveEvent is one message of the live stream: a new outbox event, or a
// job enqueued (kind "job", only host and game known).
type liveEvent struct {
	Kind    string `json:"kind"` // "event" or "job"
	ID      int64  `json:"id,omitempty"`
	Type    string `json:"type,omitempty"`
	HostID  string `json:"host_id,omitempty"`
	GameID  string `json:"game_id,omitempty"`
	JobID   int64  `json:"job_id,omitempty"`
	At      string `json:"at,omitempty"`
	Summary string `json:"summary,omitempty"`
}

// broker reads new outbox events once for every open page: woken by
// LISTEN rtm_outbox on a session connection of its own, or by polling
// (a transaction pooler has no LISTEN), it reads after its last (xid, id)
// position below the watermark of finished transactions, as the Game
// Master's consumer does, and fans the events out.
type broker struct {
	pool   *pgxpool.Pool
	listen bool
	poll   time.Duration
	log    *slog.Logger

	mu   sync.Mutex
	subs map[chan liveEvent]struct{}
}

func newBroker(pool *pgxpool.Pool, listen bool, poll time.Duration, log *slog.Logger) *broker {
	return &broker{pool: pool, listen: listen, poll: poll, log: log, subs: map[chan liveEvent]struct{}{}}
}

func (b *broker) subscribe() chan liveEvent {
	ch := make(chan liveEvent, 256)
	b.mu.Lock()
	b.subs[ch] = struct{}{}
	b.mu.Unlock()
	return ch
}

func (b *broker) unsubscribe(ch chan liveEvent) {
	b.mu.Lock()
	delete(b.subs, ch)
	b.mu.Unlock()
}

// publish never blocks: a page too slow to take its messages loses some,
// and refreshes on its own timer anyway.
func (b *broker) publish(ev liveEvent) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for ch := range b.subs {
		select {
		case ch <- ev:
		default:
		}
	}
}

// run reads and publishes until ctx ends, reconnecting after errors.
func (b *broker) run(ctx context.Context) {
	var pos db.Position
	havePos := false
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			_ = conn.Close(context.Background())
		}
	}()
	backoff := b.poll
	for ctx.Err() == nil {
		if !havePos {
			p, err := b.head(ctx)
			if err != nil {
				b.fail(ctx, "read the outbox's head", err, &backoff)
				continue
			}
			pos, havePos = p, true
		}
		if b.listen && (conn == nil || conn.IsClosed()) {
			c, err := b.openListener(ctx)
			if err != nil {
				b.fail(ctx, "LISTEN for live events", err, &backoff)
				continue
			}
			conn = c
		}
		next, err := b.readAfter(ctx, pos)
		if err != nil {
			b.fail(ctx, "read new outbox events", err, &backoff)
			continue
		}
		pos, backoff = next, b.poll
		if conn != nil {
			b.waitNotification(ctx, conn)
		} else {
			sleep(ctx, b.poll)
		}
	}
}

func (b *broker) fail(ctx context.Context, what string, err error, backoff *time.Duration) {
	if ctx.Err() != nil {
		return
	}
	b.log.Warn("console live view: "+what, "err", err, "retry_in", *backoff)
	sleep(ctx, *backoff)
	*backoff = min(*backoff*2, time.Minute)
}

func (b *broker) openListener(ctx context.Context) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, b.pool.Config().ConnConfig.Copy())
	if err != nil {
		return nil, err
	}
	for _, ch := range []string{db.OutboxNotifyChannel, jobsNotifyChannel} {
		if _, err := conn.Exec(ctx, "LISTEN "+ch); err != nil {
			_ = conn.Close(context.Background())
			return nil, err
		}
	}
	return conn, nil
}

// waitNotification returns after a notification or the poll interval. A
// job insert is published at once; outbox notifications lead to a read.
func (b *broker) waitNotification(ctx context.Context, conn *pgx.Conn) {
	wctx, cancel := context.WithTimeout(ctx, b.poll)
	defer cancel()
	for {
		n, err := conn.WaitForNotification(wctx)
		if err != nil {
			if wctx.Err() == nil {
				b.log.Warn("console live view: wait for notifications", "err", err)
				_ = conn.Close(context.Background())
			}
			return
		}
		if n.Channel == jobsNotifyChannel {
			b.publish(liveEvent{Kind: "job", HostID: n.Payload})
			continue
		}
		return
	}
}

// head is the position of the newest readable event: the stream starts
// after it.
func (b *broker) head(ctx context.Context) (db.Position, error) {
	evs, err := dbsqlc.New(b.pool).ConsoleRecentEvents(ctx, 1)
	if err != nil || len(evs) == 0 {
		return db.Position{}, err
	}
	return db.Position{Xid: evs[0].Xid, ID: evs[0].ID}, nil
}

// readAfter publishes the events after pos and returns the new position.
func (b *broker) readAfter(ctx context.Context, pos db.Position) (db.Position, error) {
	q := dbsqlc.New(b.pool)
	for {
		evs, err := q.ReadOutbox(ctx, dbsqlc.ReadOutboxParams{AfterXid: pos.Xid, AfterID: pos.ID, MaxEvents: 500})
		if err != nil {
			return pos, err
		}
		for _, e := range evs {
			b.publish(liveEventOf(e))
			pos = db.Position{Xid: e.Xid, ID: e.ID}
		}
		if len(evs) < 500 {
			return pos, nil
		}
	}
}

func liveEventOf(e dbsqlc.Outbox) liveEvent {
	v := eventViewOf(e)
	le := liveEvent{Kind: "event", ID: e.ID, Type: e.Type, HostID: e.HostID, GameID: e.GameID,
		At: e.CreatedAt.UTC().Format(time.RFC3339), Summary: v.Summary()}
	if e.JobID != nil {
		le.JobID = *e.JobID
	}
	return le
}

// liveStream is the Server-Sent Events endpoint. ?game= keeps only that
// game's messages.
func (s *Server) liveStream(w http.ResponseWriter, r *http.Request) {
	game := r.URL.Query().Get("game")
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("X-Accel-Buffering", "no")
	ch := s.live.subscribe()
	defer s.live.unsubscribe(ch)
	if _, err := fmt.Fprint(w, "retry: 3000\n: live\n\n"); err != nil {
		return
	}
	if rc.Flush() != nil {
		return
	}
	keepAlive := time.NewTicker(15 * time.Second)
	defer keepAlive.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-keepAlive.C:
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil || rc.Flush() != nil {
				return
			}
		case ev := <-ch:
			// A job notification names only the host: it may be this
			// game's, so it goes through.
			if game != "" && ev.Kind == "event" && ev.GameID != game {
				continue
			}
			b, err := json.Marshal(ev)
			if err != nil {
				continue
			}
			if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", ev.Kind, b); err != nil || rc.Flush() != nil {
				return
			}
		}
	}
}

// sleep waits for d or the end of ctx.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
