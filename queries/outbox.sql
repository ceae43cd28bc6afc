-- name: InsertOutboxEvent :one
INSERT INTO outbox (type, host_id, game_id, job_id, payload)
VALUES ($1, $2, $3, $4, $5)
RETURNING id, xid, created_at;

-- name: ReadOutbox :many
-- Events after the (xid, id) position, restricted to transactions below the
-- current snapshot's xmin: all of them have finished, so no event can still
-- appear before the last one returned.
SELECT * FROM outbox
WHERE (xid, id) > (sqlc.arg(after_xid)::xid8, sqlc.arg(after_id)::bigint)
  AND xid < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY xid, id
LIMIT sqlc.arg(max_events);
