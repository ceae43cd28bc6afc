-- name: FinishJobs :many
-- Finishes a batch of jobs, each only if it is still running under
-- lease_owner in the attempt given for it, and appends one outcome event per
-- job actually finished, all in this one statement (one transaction, one
-- round trip). The arrays are parallel: one element per job, the ids and
-- attempts as arrays, the rest as JSON arrays (the payloads as JSON
-- objects, the others as strings). The events'
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
WITH lock_keys AS MATERIALIZED (
    SELECT pg_advisory_xact_lock(1920233, k.key)
    FROM (
        SELECT DISTINCT hashtext(g) AS key
        FROM jsonb_array_elements_text(sqlc.arg(game_ids)::jsonb) AS g
        ORDER BY 1
    ) AS k
    ORDER BY k.key
),
lock_count AS MATERIALIZED (
    SELECT count(*) AS n FROM lock_keys
),
done AS (
    -- Driven by the primary key (id = ANY), each job's own values looked
    -- up by its place in the arrays: a join with input would be planned
    -- from estimates that say nothing about the batch (a nested loop over
    -- every running job of the fleet, times the batch), where this costs
    -- the batch's rows whatever else the table holds.
    --
    -- The ids come in ascending order (Store.FinishJobs sorts them), so
    -- width_bucket finds a job's place by binary search: array_position
    -- compared each id with half the batch on average, six times per row,
    -- a sixth of the statement's time at 256 jobs. The place is
    -- checked to hold the job, so ids out of order finish nothing rather
    -- than the wrong values.
    --
    -- The text values come as JSON arrays, not text[]: reading the i-th
    -- element of a text[] walks the i-1 before it (its elements have no
    -- fixed length), five times per row, so a batch cost the square of its
    -- length; a jsonb array keeps its elements' offsets and reads any one
    -- at once. The payloads arrive parsed, so no row parses its own.
    UPDATE jobs
    SET status = sqlc.arg(statuses)::jsonb ->> (width_bucket(jobs.id, sqlc.arg(ids)::bigint[]) - 1),
        last_error = nullif(sqlc.arg(last_errors)::jsonb ->> (width_bucket(jobs.id, sqlc.arg(ids)::bigint[]) - 1), ''),
        finished_at = now(),
        lease_owner = NULL,
        lease_expires_at = NULL
    FROM lock_count
    WHERE jobs.id = ANY(sqlc.arg(ids)::bigint[])
      AND (sqlc.arg(ids)::bigint[])[width_bucket(jobs.id, sqlc.arg(ids)::bigint[])] = jobs.id
      AND jobs.game_id = sqlc.arg(game_ids)::jsonb ->> (width_bucket(jobs.id, sqlc.arg(ids)::bigint[]) - 1)
      AND jobs.attempt = (sqlc.arg(attempts)::integer[])[width_bucket(jobs.id, sqlc.arg(ids)::bigint[])]
      -- IS TRUE keeps the planner off jobs_lease_idx (every running job
      -- of the fleet): the batch's ids through the primary key are fewer.
      AND (jobs.status = 'running') IS TRUE
      AND jobs.lease_owner = sqlc.arg(lease_owner)::text
      AND lock_count.n >= 0
    RETURNING jobs.id, jobs.game_id, jobs.host_id,
        sqlc.arg(event_types)::jsonb ->> (width_bucket(jobs.id, sqlc.arg(ids)::bigint[]) - 1) AS event_type,
        sqlc.arg(payloads)::jsonb -> (width_bucket(jobs.id, sqlc.arg(ids)::bigint[]) - 1) AS payload
)
INSERT INTO outbox (type, host_id, game_id, job_id, payload)
SELECT done.event_type, done.host_id, done.game_id, done.id, done.payload
FROM done
ORDER BY done.id
RETURNING job_id::bigint AS job_id, id;
