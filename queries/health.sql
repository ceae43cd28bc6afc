-- name: GetRecordHealth :one
SELECT status, current_container_id, health FROM runtime_records WHERE game_id = sqlc.arg(game_id);

-- name: SetRecordHealth :execrows
-- Only the running record of that very container takes its health.
UPDATE runtime_records SET health = sqlc.arg(health)
WHERE game_id = sqlc.arg(game_id) AND host_id = sqlc.arg(host_id)
  AND status = 'running' AND current_container_id = sqlc.arg(container_id)
  AND health <> sqlc.arg(health);

-- name: ListRunningHealth :many
SELECT game_id, health FROM runtime_records WHERE host_id = sqlc.arg(host_id) AND status = 'running';
