-- Reads of the Game Master client (rtmclient) and the operator CLI.

-- name: ListJobs :many
-- Jobs, newest first, optionally of one game, host and status, before an id
-- (keyset pagination; 0 means from the newest).
SELECT * FROM jobs
WHERE (sqlc.narg(game_id)::text IS NULL OR game_id = sqlc.narg(game_id)::text)
  AND (sqlc.narg(host_id)::text IS NULL OR host_id = sqlc.narg(host_id)::text)
  AND (sqlc.narg(status)::text IS NULL OR status = sqlc.narg(status)::text)
  AND (sqlc.arg(before_id)::bigint = 0 OR id < sqlc.arg(before_id)::bigint)
ORDER BY id DESC
LIMIT sqlc.arg(max_jobs);

-- name: ListRecords :many
-- Records by game id, optionally of one host and status, after a game id
-- (keyset pagination).
SELECT * FROM runtime_records
WHERE (sqlc.narg(host_id)::text IS NULL OR host_id = sqlc.narg(host_id)::text)
  AND (sqlc.narg(status)::text IS NULL OR status = sqlc.narg(status)::text)
  AND game_id > sqlc.arg(after_game_id)::text
ORDER BY game_id
LIMIT sqlc.arg(max_records);
