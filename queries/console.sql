-- The operator console (agent/console): read-only pages over the whole
-- fleet. Its pool runs every statement unnamed (pgx
-- QueryExecModeCacheDescribe), so each is planned with its values: the
-- optional filters below ("narg IS NULL OR ...") fold away and the planner
-- picks the index of the filter that is set.

-- name: ConsoleRecordCountsByHost :many
-- Games per host and status, for the fleet page.
SELECT host_id,
    count(*) FILTER (WHERE status = 'running')::bigint AS running,
    count(*) FILTER (WHERE status = 'stopped')::bigint AS stopped,
    count(*) FILTER (WHERE status = 'removed')::bigint AS removed
FROM runtime_records
GROUP BY host_id
ORDER BY host_id;

-- name: ConsoleJobCountsByHost :many
-- Unfinished jobs per host, registered or not, with how long the oldest
-- queued one has waited (by the database's clock).
SELECT host_id,
    count(*) FILTER (WHERE status = 'queued')::bigint AS queued,
    count(*) FILTER (WHERE status = 'running')::bigint AS running,
    coalesce(min(created_at) FILTER (WHERE status = 'queued'), now())::timestamptz AS oldest_queued_at,
    now()::timestamptz AS checked_at
FROM jobs
WHERE status IN ('queued', 'running')
GROUP BY host_id
ORDER BY host_id;

-- name: ConsoleListGames :many
-- Records in game id order (bytewise: ids are [a-z0-9-]), after a game id
-- (keyset pagination, never OFFSET), optionally of one host and status, and
-- whose id starts with a prefix. The prefix is a range on the C-collated
-- index, so a search reads only the matching ids.
SELECT * FROM runtime_records
WHERE (sqlc.narg(host_id)::text IS NULL OR host_id = sqlc.narg(host_id)::text)
  AND (sqlc.narg(status)::text IS NULL OR status = sqlc.narg(status)::text)
  AND (game_id COLLATE "C") > (sqlc.arg(after_game_id)::text COLLATE "C")
  AND (game_id COLLATE "C") >= (sqlc.arg(prefix)::text COLLATE "C")
  AND (game_id COLLATE "C") < ((sqlc.arg(prefix)::text || chr(1114111)) COLLATE "C")
ORDER BY (game_id COLLATE "C")
LIMIT sqlc.arg(max_records);

-- name: ConsoleGameEvents :many
-- A game's events, newest first, before an (xid, id) position (keyset).
SELECT * FROM outbox
WHERE game_id = sqlc.arg(game_id)
  AND (xid, id) < (sqlc.arg(before_xid)::xid8, sqlc.arg(before_id)::bigint)
ORDER BY xid DESC, id DESC
LIMIT sqlc.arg(max_events);

-- name: ConsoleGameJobs :many
-- A game's jobs, newest first, before an id (keyset).
SELECT * FROM jobs
WHERE game_id = sqlc.arg(game_id)
  AND id < sqlc.arg(before_id)::bigint
ORDER BY id DESC
LIMIT sqlc.arg(max_jobs);

-- name: ConsoleLastExit :one
-- The game's last runtime.stopped event: why it last stopped.
SELECT * FROM outbox
WHERE game_id = sqlc.arg(game_id)
  AND type = 'runtime.stopped'
ORDER BY xid DESC, id DESC
LIMIT 1;

-- name: ConsoleListJobs :many
-- Jobs newest first, before an id (keyset), optionally of one status, kind,
-- host and game; with the database's clock, for queued jobs' waits.
SELECT sqlc.embed(jobs), now()::timestamptz AS checked_at FROM jobs
WHERE (sqlc.narg(status)::text IS NULL OR status = sqlc.narg(status)::text)
  AND (sqlc.narg(kind)::text IS NULL OR kind = sqlc.narg(kind)::text)
  AND (sqlc.narg(host_id)::text IS NULL OR host_id = sqlc.narg(host_id)::text)
  AND (sqlc.narg(game_id)::text IS NULL OR game_id = sqlc.narg(game_id)::text)
  AND id < sqlc.arg(before_id)::bigint
ORDER BY id DESC
LIMIT sqlc.arg(max_jobs);

-- name: ConsoleJobsPerMinute :many
-- Jobs finished per minute and outcome since a time.
SELECT date_trunc('minute', finished_at)::timestamptz AS minute, status, count(*)::bigint AS n
FROM jobs
WHERE finished_at >= sqlc.arg(since)::timestamptz
GROUP BY 1, 2
ORDER BY 1, 2;

-- name: ConsoleEventsPerMinute :many
-- Outbox events written per minute since a time.
SELECT date_trunc('minute', created_at)::timestamptz AS minute, count(*)::bigint AS n
FROM outbox
WHERE created_at >= sqlc.arg(since)::timestamptz
GROUP BY 1
ORDER BY 1;

-- name: ConsoleRecentEvents :many
-- The newest readable events (below the watermark of finished
-- transactions), newest first: the start of the live tail.
SELECT * FROM outbox
WHERE xid < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY xid DESC, id DESC
LIMIT sqlc.arg(max_events);

-- name: ConsoleNow :one
SELECT now()::timestamptz;
