-- Queries of the reconciler (agent/reconcile).

-- name: LockContainer :exec
-- Serialises the reports of one container that carries no game label.
SELECT pg_advisory_xact_lock(1920234, hashtext(sqlc.arg(container_id)::text));

-- name: GameHasUnfinishedJob :one
-- Whether a job of the game on the host is queued or running: such a job may
-- be creating, adopting or replacing the game's container right now.
SELECT EXISTS (
    SELECT 1 FROM jobs
    WHERE game_id = sqlc.arg(game_id)
      AND host_id = sqlc.arg(host_id)
      AND status IN ('queued', 'running')
)::boolean AS active;

-- name: GameJobInProgress :one
-- The game's job in progress on the host, if any: claimed at least once
-- (started_at is set at every claim and never cleared) and not finished —
-- running, or queued again for its next attempt, after a drain or after
-- its agent died. Jobs of a game run one at a time in id order, so there
-- is at most one; the changes it asks for are its own until it finishes.
-- Read under the game's lock by every writer of the game's record.
SELECT id, kind FROM jobs
WHERE game_id = sqlc.arg(game_id)
  AND host_id = sqlc.arg(host_id)
  AND status IN ('queued', 'running')
  AND (status = 'running' OR started_at IS NOT NULL)
ORDER BY id
LIMIT 1;

-- name: RecordOwnsContainer :one
-- Whether a live (running or stopped) record of the host is bound to the
-- container.
SELECT EXISTS (
    SELECT 1 FROM runtime_records
    WHERE host_id = sqlc.arg(host_id)
      AND current_container_id = sqlc.arg(container_id)
      AND status IN ('running', 'stopped')
)::boolean AS owned;

-- name: OrphanReported :one
-- Whether a container.orphaned event of the container is still in the
-- outbox (it is reported once, until the retention sweep prunes the event).
SELECT EXISTS (
    SELECT 1 FROM outbox
    WHERE type = 'container.orphaned'
      AND host_id = sqlc.arg(host_id)
      AND game_id = sqlc.arg(game_id)
      AND payload->>'container_id' = sqlc.arg(container_id)::text
)::boolean AS reported;
