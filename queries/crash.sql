-- name: InsertCrashReport :one
INSERT INTO crash_reports (game_id, host_id, container_id, exit_code, oom, exited_at, lines, truncated, capture_error, outbox_id)
VALUES (sqlc.arg(game_id), sqlc.arg(host_id), sqlc.arg(container_id), sqlc.narg(exit_code), sqlc.arg(oom),
        sqlc.arg(exited_at), sqlc.arg(lines), sqlc.arg(truncated), sqlc.narg(capture_error), sqlc.narg(outbox_id))
RETURNING id;

-- name: PruneCrashReports :execrows
-- Keeps the game's last keep reports.
DELETE FROM crash_reports c
WHERE c.game_id = sqlc.arg(game_id)::text
  AND c.id < (SELECT min(k.id) FROM (
      SELECT r.id FROM crash_reports r WHERE r.game_id = sqlc.arg(game_id)::text ORDER BY r.id DESC LIMIT sqlc.arg(keep)::int
  ) k);

-- name: ListCrashReports :many
SELECT * FROM crash_reports WHERE game_id = sqlc.arg(game_id) ORDER BY id DESC LIMIT sqlc.arg(max_rows);
