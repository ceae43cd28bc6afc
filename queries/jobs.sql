-- name: InsertJob :one
-- A second insert with the same (game_id, idempotency_key) inserts nothing
-- and returns no row; the caller then reads the first job.
INSERT INTO jobs (host_id, game_id, kind, payload, idempotency_key, traceparent, max_attempts, run_after)
VALUES (
    sqlc.arg(host_id), sqlc.arg(game_id), sqlc.arg(kind), sqlc.arg(payload),
    sqlc.narg(idempotency_key), sqlc.narg(traceparent), sqlc.arg(max_attempts),
    coalesce(sqlc.narg(run_after)::timestamptz, now())
)
ON CONFLICT (game_id, idempotency_key) DO NOTHING
RETURNING *;

-- name: GetJobByIdempotencyKey :one
SELECT * FROM jobs WHERE game_id = $1 AND idempotency_key = $2;

-- name: GetJob :one
SELECT * FROM jobs WHERE id = $1;

-- name: ClaimJobs :many
-- Claims, for one host, up to max_jobs queued jobs that are due and at the
-- head of their game's line (no earlier unfinished job of the same game), so
-- the jobs of one game run one at a time in insertion order. A job whose
-- cancel was asked for is never claimed: it is listed instead.
--
-- In the same statement (so an idle poll stays one statement) it reports
-- what the agent needs to wait well: next_due_in_us, how long from now
-- (microseconds, at least 1, at most a day: the agent polls more often
-- than that, and a Go duration ends at 292 years) until the earliest job
-- not yet due that heads its game's line falls due, 0 when there is none,
-- for a timer; and cancel_ids, queued jobs of the host whose cancel was asked
-- for, whatever their run_after or place in line, for the agent to cancel
-- at once. Both read the statement's snapshot, taken before the claim: a
-- job claimed here still counts as unfinished and so still holds back its
-- game's later jobs, as it should.
--
-- There is always exactly one row of queue state; the claimed jobs are
-- joined to it, so a claim of nothing returns one row with a NULL id.
--
-- Cost: the candidates come from jobs_head_idx (host_id, id) WHERE status
-- = 'queued' AND is_head, in its order, so neither finished jobs nor jobs
-- waiting behind their game's head are read (migration 000010 keeps
-- is_head). is_head is a hint that may be spuriously true, never falsely
-- false, so the "no earlier unfinished job" guard stays, run over the
-- candidates only. The host is compared as ANY of a one-element array and
-- the order is (host_id, id) so that no other index can give that order:
-- with the primary key (id order, every row) the planner would read each
-- finished row before the queued ones whenever its statistics were taken
-- with a full queue. The claimed rows are then updated through the
-- primary key by id (a join would hash the whole table). The guard's
-- OFFSET 0 keeps it a probe per candidate (without it the planner may
-- turn it into a hash anti join over every unfinished job, and drops the
-- LIMIT), estimated to pass half the candidates, so that the plan's cost
-- stays that of the batch (as a scalar "(...) IS NULL" it was estimated
-- to pass 0.5 %, the whole index was costed, and the claim went over
-- jit_above_cost: a JIT compile per claim).
--
-- The guard looks for the latest earlier unfinished job of the game,
-- reading a (game_id, id) index backwards from the candidate, so that it
-- reads only what lies before it: row versions of the game's ended jobs
-- that no VACUUM has removed yet. It compares (game_id, id) as a row and
-- bounds the game as a range, not an equality: only the game's indexes
-- serve that (an "id <" bound would let the primary key walk the table
-- when statistics call it small), and PostgreSQL 15 starts a scan at a
-- row comparison but does not end one there when the game is also an
-- equality (only a row comparison's first column can end a scan, and here
-- the id decides). The guard "game_id = AND (game_id, id) <" read
-- forwards through the game's whole line, ending only after its last
-- queued job: behind a hot game's 10,000 queued jobs, 35 index pages and
-- 0.3 ms on every claim of its head, against 2 pages and 0.02 ms now.
-- The next due time reads jobs_head_due_idx, the heads again.
WITH candidates AS (
    SELECT j.id
    FROM jobs j
    WHERE j.host_id = ANY(ARRAY[sqlc.arg(host_id)::text])
      AND j.status = 'queued'
      AND j.is_head
      AND j.run_after <= now()
      AND j.cancel_requested_at IS NULL
      AND NOT EXISTS (
          SELECT 1 FROM jobs e
          WHERE e.game_id >= j.game_id AND e.game_id <= j.game_id
            AND (e.game_id, e.id) < (j.game_id, j.id)
            AND e.status IN ('queued', 'running')
          ORDER BY e.game_id DESC, e.id DESC
          LIMIT 1 OFFSET 0
      )
    ORDER BY j.host_id, j.id
    LIMIT sqlc.arg(max_jobs)
    FOR UPDATE SKIP LOCKED
),
claimed AS (
    UPDATE jobs
    SET status = 'running',
        attempt = jobs.attempt + 1,
        lease_owner = sqlc.arg(lease_owner)::text,
        lease_expires_at = now() + sqlc.arg(lease_ms)::bigint * interval '1 millisecond',
        started_at = now()
    WHERE jobs.id = ANY(ARRAY(SELECT candidates.id FROM candidates))
    RETURNING jobs.*
),
queue AS (
    SELECT
        coalesce((
         SELECT ceil(extract(epoch FROM least(n.run_after, now() + interval '1 day') - now()) * 1000000)::bigint
         FROM jobs n
         WHERE n.host_id = sqlc.arg(host_id)
           AND n.status = 'queued'
           AND n.is_head
           AND n.run_after > now()
           AND n.cancel_requested_at IS NULL
           AND NOT EXISTS (
               SELECT 1 FROM jobs e
               WHERE e.game_id >= n.game_id AND e.game_id <= n.game_id
                 AND (e.game_id, e.id) < (n.game_id, n.id)
                 AND e.status IN ('queued', 'running')
               ORDER BY e.game_id DESC, e.id DESC
               LIMIT 1 OFFSET 0
           )
         ORDER BY n.run_after
         LIMIT 1), 0)::bigint AS next_due_in_us,
        ARRAY(
            SELECT c.id
            FROM jobs c
            WHERE c.host_id = sqlc.arg(host_id)
              AND c.status = 'queued'
              AND c.cancel_requested_at IS NOT NULL
            ORDER BY c.id
            LIMIT sqlc.arg(max_cancels)
        )::bigint[] AS cancel_ids
)
SELECT claimed.*, queue.next_due_in_us, queue.cancel_ids
FROM queue
LEFT JOIN claimed ON true;

-- name: ExtendLeases :many
-- Extends the leases an agent still holds and tells it which of its jobs
-- were asked to cancel.
UPDATE jobs
SET lease_expires_at = now() + sqlc.arg(lease_ms)::bigint * interval '1 millisecond'
WHERE id = ANY(sqlc.arg(ids)::bigint[])
  AND status = 'running'
  AND lease_owner = sqlc.arg(lease_owner)::text
RETURNING id, cancel_requested_at;

-- name: FinishJob :one
UPDATE jobs
SET status = sqlc.arg(status),
    last_error = sqlc.narg(last_error),
    finished_at = now(),
    lease_owner = NULL,
    lease_expires_at = NULL
WHERE id = sqlc.arg(id)
  AND status = 'running'
  AND lease_owner = sqlc.arg(lease_owner)::text
RETURNING *;

-- name: RetryJob :one
UPDATE jobs
SET status = 'queued',
    last_error = sqlc.narg(last_error),
    run_after = now() + sqlc.arg(delay_ms)::bigint * interval '1 millisecond',
    lease_owner = NULL,
    lease_expires_at = NULL
WHERE id = sqlc.arg(id)
  AND status = 'running'
  AND lease_owner = sqlc.arg(lease_owner)::text
RETURNING *;

-- name: RequeueExpiredLeases :many
-- Gives the jobs of a host whose lease expired (their agent died) back to
-- the queue. The attempt they used stays counted.
UPDATE jobs
SET status = 'queued',
    lease_owner = NULL,
    lease_expires_at = NULL,
    last_error = 'lease expired: the agent running this job stopped renewing it'
WHERE host_id = sqlc.arg(host_id)
  AND status = 'running'
  AND lease_expires_at < now()
RETURNING id;

-- name: ListJobsByGame :many
SELECT * FROM jobs WHERE game_id = $1 ORDER BY id;
