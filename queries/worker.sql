-- name: ReleaseJob :one
-- Gives a job its owner still holds back to the queue without counting the
-- attempt: the agent is shutting down and did not finish it, which says
-- nothing about the job. The job keeps its place at the head of its game's
-- line and is due at once.
UPDATE jobs
SET status = 'queued',
    attempt = greatest(jobs.attempt - 1, 0),
    run_after = now(),
    lease_owner = NULL,
    lease_expires_at = NULL
WHERE id = sqlc.arg(id)
  AND status = 'running'
  AND lease_owner = sqlc.arg(lease_owner)::text
RETURNING *;

-- name: CancelQueuedJob :one
-- Cancels a job that no agent holds. The caller appends the outcome event in
-- the same transaction.
UPDATE jobs
SET status = 'cancelled',
    cancel_requested_at = coalesce(cancel_requested_at, now()),
    finished_at = now(),
    lease_owner = NULL,
    lease_expires_at = NULL
WHERE id = sqlc.arg(id)
  AND status = 'queued'
RETURNING *;

-- name: RequestJobCancel :one
-- Asks the agent holding a running job to cancel it; the agent learns of it
-- when it extends its lease, which a trigger makes it do at once
-- (rtm_jobs_cancel, migration 000010).
UPDATE jobs
SET cancel_requested_at = coalesce(cancel_requested_at, now())
WHERE id = sqlc.arg(id)
  AND status = 'running'
RETURNING *;
