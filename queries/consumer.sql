-- Gap-free outbox consumers. See internal/db/consumer.go.

-- name: GetOutboxConsumer :one
SELECT * FROM outbox_consumers WHERE name = sqlc.arg(name);

-- name: TryLockOutboxConsumer :one
-- Session-level try-lock: one active reader per consumer name across all
-- processes. The class differs from the per-game (1920233), container and
-- migration (1920234), sweep (1920235) and retention (1920236) locks.
SELECT pg_try_advisory_lock(1920237, hashtext(sqlc.arg(name)::text)) AS locked;

-- name: UnlockOutboxConsumer :one
SELECT pg_advisory_unlock(1920237, hashtext(sqlc.arg(name)::text)) AS unlocked;

-- name: OutboxHeldBack :one
-- Whether committed events after the position wait behind the watermark: an
-- older transaction (in any database of the cluster) is still open, so they
-- are not readable yet. A reader then polls again soon instead of waiting
-- for a notification that their commit has already sent.
SELECT EXISTS (
    SELECT 1 FROM outbox
    WHERE (xid, id) > (sqlc.arg(after_xid)::xid8, sqlc.arg(after_id)::bigint)
      AND xid >= pg_snapshot_xmin(pg_current_snapshot())
)::boolean AS held_back;

-- name: TailOutbox :many
-- The last max_events readable events (below the watermark), newest first.
SELECT * FROM outbox
WHERE xid < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY xid DESC, id DESC
LIMIT sqlc.arg(max_events);
