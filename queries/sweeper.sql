-- The cleanup sweeper and retention. See internal/db/sweeper.go.

-- name: TryLockHostSweep :one
-- Session-level try-lock: one sweep of a host's records at a time across
-- all agents. The caller keeps the connection for the pass and unlocks (or
-- closes) it. The class differs from the per-game (1920233) and migration
-- (1920234) locks. Two host ids whose hashtext collides share a lock: one
-- of them skips a pass now and then, which is harmless.
SELECT pg_try_advisory_lock(1920235, hashtext(sqlc.arg(host_id)::text)) AS locked;

-- name: UnlockHostSweep :one
SELECT pg_advisory_unlock(1920235, hashtext(sqlc.arg(host_id)::text)) AS unlocked;

-- name: TryLockRetention :one
-- Session-level try-lock: one retention pass at a time across all agents
-- (retention is global, not per host).
SELECT pg_try_advisory_lock(1920236, 0) AS locked;

-- name: UnlockRetention :one
SELECT pg_advisory_unlock(1920236, 0) AS unlocked;

-- name: ListExpiredStoppedRecords :many
-- One batch of a host's stopped records whose last operation is older than
-- the cutoff and whose game has no queued or running job, in
-- (last_op_at, game_id) order after the given key (keyset pagination, so a
-- record the sweeper failed to remove is not returned again in the pass).
SELECT r.* FROM runtime_records r
WHERE r.host_id = sqlc.arg(host_id)
  AND r.status = 'stopped'
  AND r.last_op_at < sqlc.arg(cutoff)::timestamptz
  AND (r.last_op_at, r.game_id) > (sqlc.arg(after_last_op_at)::timestamptz, sqlc.arg(after_game_id)::text)
  AND NOT EXISTS (
      SELECT 1 FROM jobs j
      WHERE j.game_id = r.game_id AND j.status IN ('queued', 'running')
  )
ORDER BY r.last_op_at, r.game_id
LIMIT sqlc.arg(max_records);

-- name: GameHasActiveJob :one
SELECT EXISTS (
    SELECT 1 FROM jobs WHERE game_id = sqlc.arg(game_id) AND status IN ('queued', 'running')
) AS active;

-- name: DeleteFinishedJobs :execrows
-- One batch of finished jobs older than the retention. Their idempotency
-- keys are forgotten with them.
WITH doomed AS (
    SELECT id FROM jobs
    WHERE finished_at < now() - sqlc.arg(retention_ms)::bigint * interval '1 millisecond'
      AND status IN ('succeeded', 'failed', 'cancelled')
    ORDER BY finished_at
    LIMIT sqlc.arg(max_rows)
    FOR UPDATE SKIP LOCKED
)
DELETE FROM jobs USING doomed WHERE jobs.id = doomed.id;

-- name: DeleteReadOutbox :execrows
-- One batch of outbox rows older than the retention that every registered
-- consumer has read past. With no consumer registered, by age alone.
-- In (xid, id) order, the primary key's (migration 000015).
WITH doomed AS (
    SELECT o.xid, o.id FROM outbox o
    WHERE o.created_at < now() - sqlc.arg(retention_ms)::bigint * interval '1 millisecond'
      AND NOT EXISTS (
          SELECT 1 FROM outbox_consumers c
          WHERE (o.xid, o.id) > (c.last_xid, c.last_id)
      )
    ORDER BY o.xid, o.id
    LIMIT sqlc.arg(max_rows)
    FOR UPDATE SKIP LOCKED
)
DELETE FROM outbox USING doomed WHERE (outbox.xid, outbox.id) = (doomed.xid, doomed.id);

-- name: RegisterOutboxConsumer :one
-- Registers a consumer at the beginning of the outbox; an already
-- registered consumer keeps its position.
INSERT INTO outbox_consumers (name) VALUES (sqlc.arg(name))
ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name
RETURNING *;

-- name: AdvanceOutboxConsumer :one
-- Moves a consumer's position forward; it never moves backwards.
UPDATE outbox_consumers SET
    last_xid = CASE WHEN (sqlc.arg(last_xid)::xid8, sqlc.arg(last_id)::bigint) > (last_xid, last_id)
                    THEN sqlc.arg(last_xid)::xid8 ELSE last_xid END,
    last_id = CASE WHEN (sqlc.arg(last_xid)::xid8, sqlc.arg(last_id)::bigint) > (last_xid, last_id)
                   THEN sqlc.arg(last_id)::bigint ELSE last_id END,
    updated_at = now()
WHERE name = sqlc.arg(name)
RETURNING *;

-- name: ListOutboxConsumers :many
SELECT * FROM outbox_consumers ORDER BY name;

-- name: DeleteOutboxConsumer :execrows
DELETE FROM outbox_consumers WHERE name = sqlc.arg(name);

-- name: DeleteOldCrashReports :execrows
-- One batch of crash reports captured before the retention.
WITH doomed AS (
    SELECT id FROM crash_reports
    WHERE captured_at < now() - sqlc.arg(retention_ms)::bigint * interval '1 millisecond'
    ORDER BY captured_at
    LIMIT sqlc.arg(max_rows)
    FOR UPDATE SKIP LOCKED
)
DELETE FROM crash_reports USING doomed WHERE crash_reports.id = doomed.id;
