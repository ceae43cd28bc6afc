-- Fleet: the host lease (one active agent per host) and fleet gauges. See
-- internal/db/fleet.go. Every time is the database's clock.

-- name: AcquireHostLease :one
-- Takes the host's lease for agent_id when it is free, expired or already
-- its own. No row: another agent holds it.
INSERT INTO hosts (host_id, agent_id, agent_version, lease_expires_at)
VALUES (sqlc.arg(host_id), sqlc.arg(agent_id), sqlc.arg(agent_version),
        now() + sqlc.arg(ttl_ms)::bigint * interval '1 millisecond')
ON CONFLICT (host_id) DO UPDATE SET
    agent_id = EXCLUDED.agent_id,
    agent_version = EXCLUDED.agent_version,
    started_at = CASE WHEN hosts.agent_id = EXCLUDED.agent_id THEN hosts.started_at ELSE now() END,
    heartbeat_at = now(),
    lease_expires_at = EXCLUDED.lease_expires_at
WHERE hosts.agent_id = EXCLUDED.agent_id
   OR hosts.lease_expires_at IS NULL
   OR hosts.lease_expires_at <= now()
RETURNING *;

-- name: RenewHostLease :execrows
-- Extends the lease its holder still has; 0 rows: it expired or another
-- agent took it. The renewal is also the host's heartbeat.
UPDATE hosts
SET lease_expires_at = now() + sqlc.arg(ttl_ms)::bigint * interval '1 millisecond',
    heartbeat_at = now()
WHERE host_id = sqlc.arg(host_id)
  AND agent_id = sqlc.arg(agent_id)
  AND lease_expires_at > now();

-- name: ReleaseHostLease :execrows
-- Gives the lease up at a clean shutdown, so that a standby takes over at
-- its next poll instead of after the ttl.
UPDATE hosts
SET lease_expires_at = NULL
WHERE host_id = sqlc.arg(host_id)
  AND agent_id = sqlc.arg(agent_id);

-- name: FleetQueueDepth :many
-- Queued jobs per host, registered or not, with whether the host has a live
-- agent (a lease that has not expired). Hosts with nothing queued are left
-- out. Uses jobs_due_idx.
SELECT j.host_id,
    count(*)::bigint AS queued,
    coalesce(bool_or(h.lease_expires_at > now()), false)::boolean AS live
FROM jobs j
LEFT JOIN hosts h ON h.host_id = j.host_id
WHERE j.status = 'queued'
GROUP BY j.host_id
ORDER BY j.host_id;

-- name: FleetHostsDown :one
-- Registered hosts whose lease has expired or was released: no live agent.
SELECT count(*)::bigint FROM hosts
WHERE lease_expires_at IS NULL OR lease_expires_at <= now();

-- name: TakeOverHostLease :one
-- Takes the lease from dead_agent_id, an agent the caller knows to be dead
-- (a process of this machine that no longer exists), without waiting for
-- the lease to expire, and in the same statement gives that agent's running
-- jobs back to the queue: their leases have not expired yet, but nobody
-- renews them. No row: the lease has moved on since.
WITH took AS (
    UPDATE hosts
    SET agent_id = sqlc.arg(agent_id),
        agent_version = sqlc.arg(agent_version),
        started_at = now(),
        heartbeat_at = now(),
        lease_expires_at = now() + sqlc.arg(ttl_ms)::bigint * interval '1 millisecond'
    WHERE hosts.host_id = sqlc.arg(host_id)
      AND hosts.agent_id = sqlc.arg(dead_agent_id)
    RETURNING hosts.host_id, hosts.lease_expires_at
),
requeued AS (
    UPDATE jobs
    SET status = 'queued',
        lease_owner = NULL,
        lease_expires_at = NULL,
        last_error = 'the agent running this job died; requeued by the agent that took its host over'
    FROM took
    WHERE jobs.host_id = took.host_id
      AND jobs.status = 'running'
      AND jobs.lease_owner = sqlc.arg(dead_agent_id)
    RETURNING jobs.id
)
SELECT took.lease_expires_at, (SELECT count(*) FROM requeued)::bigint AS requeued
FROM took;
