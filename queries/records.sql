-- name: LockGame :exec
-- Serialises every writer of one game's record and events. Taken as the
-- first statement of a transaction, before any write assigns it a
-- transaction id, so the outbox's xid order is the commit order per game.
SELECT pg_advisory_xact_lock(1920233, hashtext(sqlc.arg(game_id)::text));

-- name: GetRecord :one
SELECT * FROM runtime_records WHERE game_id = $1;

-- name: GetRecordForUpdate :one
SELECT * FROM runtime_records WHERE game_id = $1 FOR UPDATE;

-- name: UpsertRecord :exec
INSERT INTO runtime_records (
    game_id, host_id, status, current_container_id, current_image_ref,
    engine_endpoint, state_path, docker_network,
    started_at, stopped_at, removed_at, last_op_at, created_at,
    current_image_digest
) VALUES (
    $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14
)
ON CONFLICT (game_id) DO UPDATE SET
    host_id = EXCLUDED.host_id,
    status = EXCLUDED.status,
    current_container_id = EXCLUDED.current_container_id,
    current_image_ref = EXCLUDED.current_image_ref,
    current_image_digest = EXCLUDED.current_image_digest,
    engine_endpoint = EXCLUDED.engine_endpoint,
    state_path = EXCLUDED.state_path,
    docker_network = EXCLUDED.docker_network,
    started_at = EXCLUDED.started_at,
    stopped_at = EXCLUDED.stopped_at,
    removed_at = EXCLUDED.removed_at,
    last_op_at = EXCLUDED.last_op_at,
    -- Health belongs to one run of one container: a new container, a new
    -- start or an exit forgets it until Docker says it again.
    health = CASE
        WHEN EXCLUDED.status = 'running'
             AND EXCLUDED.current_container_id IS NOT DISTINCT FROM runtime_records.current_container_id
             AND EXCLUDED.started_at IS NOT DISTINCT FROM runtime_records.started_at
        THEN runtime_records.health
        ELSE 'none' END;

-- name: ListRecordsByHost :many
SELECT * FROM runtime_records
WHERE host_id = sqlc.arg(host_id)
  AND (sqlc.narg(status)::text IS NULL OR status = sqlc.narg(status)::text)
ORDER BY game_id;

-- name: ListLiveRecordsByHost :many
-- The host's running and stopped records in one snapshot: listed status by
-- status, a record moving between the two would be missed.
SELECT * FROM runtime_records
WHERE host_id = sqlc.arg(host_id)
  AND status IN ('running', 'stopped')
ORDER BY game_id;
