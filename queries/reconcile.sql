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

-- name: GameHasRunningJob :one
-- Whether a job of the game on the host is running: it is changing the
-- game's container now and commits the record's transition itself.
SELECT EXISTS (
    SELECT 1 FROM jobs
    WHERE game_id = sqlc.arg(game_id)
      AND host_id = sqlc.arg(host_id)
      AND status = 'running'
)::boolean AS running;

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
