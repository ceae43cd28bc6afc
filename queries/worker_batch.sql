-- name: FinishJobs :many
-- Finishes a batch of jobs, each only if it is still running under
-- lease_owner in the attempt given for it, and appends one outcome event per
-- job actually finished, all in this one statement (one transaction, one
-- round trip). The arrays are parallel: one element per job. The events'
-- type and payload are built by the caller from the job it claimed; a job
-- whose lease was lost (or that is not of the game given for it, whose lock
-- was taken) updates nothing and so appends nothing.
--
-- Order of work, which the outbox's commit-order guarantee relies on: the
-- per-game advisory locks of every game in the batch are all taken (in
-- ascending key order, so two batches cannot deadlock) before the first row
-- is written, that is before the transaction is given its xid. The UPDATE
-- joins the single row of lock_count, which exists only once lock_keys has
-- been read to the end; the INSERT reads the UPDATE's rows. So no write can
-- happen while a lock is still outstanding.
WITH input AS MATERIALIZED (
    -- One row per job, read from the parallel arrays in one pass. (Looking
    -- each value up with array_position walked the arrays once per value
    -- and row: quadratic in the batch, most of the finish's cost at a few
    -- hundred jobs.)
    -- (Set-returning functions in one select list run in step.)
    SELECT
        unnest(sqlc.arg(ids)::bigint[]) AS id,
        unnest(sqlc.arg(game_ids)::text[]) AS game_id,
        unnest(sqlc.arg(attempts)::integer[]) AS attempt,
        unnest(sqlc.arg(statuses)::text[]) AS status,
        unnest(sqlc.arg(last_errors)::text[]) AS last_error,
        unnest(sqlc.arg(event_types)::text[]) AS event_type,
        unnest(sqlc.arg(payloads)::text[]) AS payload
),
lock_keys AS MATERIALIZED (
    SELECT pg_advisory_xact_lock(1920233, k.key)
    FROM (
        SELECT DISTINCT hashtext(game_id) AS key
        FROM input
        ORDER BY 1
    ) AS k
    ORDER BY k.key
),
lock_count AS MATERIALIZED (
    SELECT count(*) AS n FROM lock_keys
),
done AS (
    -- Each job found through the primary key from its input row: the
    -- batch's rows, whatever else the table holds.
    UPDATE jobs
    SET status = input.status,
        last_error = nullif(input.last_error, ''),
        finished_at = now(),
        lease_owner = NULL,
        lease_expires_at = NULL
    FROM input, lock_count
    WHERE jobs.id = input.id
      AND jobs.game_id = input.game_id
      AND jobs.attempt = input.attempt
      -- IS TRUE keeps the planner off jobs_lease_idx (every running job
      -- of the fleet): the batch's ids through the primary key are fewer.
      AND (jobs.status = 'running') IS TRUE
      AND jobs.lease_owner = sqlc.arg(lease_owner)::text
      AND lock_count.n >= 0
    RETURNING jobs.id, jobs.game_id, jobs.host_id, input.event_type, input.payload
)
INSERT INTO outbox (type, host_id, game_id, job_id, payload)
SELECT done.event_type, done.host_id, done.game_id, done.id, done.payload::jsonb
FROM done
ORDER BY done.id
RETURNING job_id::bigint AS job_id, id;
