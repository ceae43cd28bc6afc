-- name: RegisterHost :one
INSERT INTO hosts (host_id, agent_id, agent_version)
VALUES ($1, $2, $3)
ON CONFLICT (host_id) DO UPDATE SET
    agent_id = EXCLUDED.agent_id,
    agent_version = EXCLUDED.agent_version,
    started_at = now(),
    heartbeat_at = now()
RETURNING *;

-- name: HeartbeatHost :execrows
UPDATE hosts SET heartbeat_at = now() WHERE host_id = $1 AND agent_id = $2;

-- name: GetHost :one
SELECT * FROM hosts WHERE host_id = $1;

-- name: ListHosts :many
SELECT * FROM hosts ORDER BY host_id;

-- name: AdvanceEventCursor :exec
-- The cursor never moves backwards: replays after a reconnect may apply
-- older events again.
UPDATE hosts
SET event_cursor_nanos = greatest(event_cursor_nanos, sqlc.arg(cursor_nanos)::bigint)
WHERE host_id = sqlc.arg(host_id);

-- name: SchemaVersion :one
SELECT version, dirty FROM schema_migrations LIMIT 1;
