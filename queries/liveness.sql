-- Host liveness. See internal/db/liveness.go.

-- name: ListHostsWithLiveness :many
-- Every registered host, down when its heartbeat is older than the
-- threshold (by the database's clock, which also writes heartbeats), with
-- the number of its queued jobs (they wait for it: claims are by host id).
SELECT sqlc.embed(hosts),
    (hosts.heartbeat_at < now() - sqlc.arg(threshold_ms)::bigint * interval '1 millisecond')::boolean AS down,
    (SELECT count(*) FROM jobs j WHERE j.host_id = hosts.host_id AND j.status = 'queued')::bigint AS queued_jobs,
    now()::timestamptz AS checked_at
FROM hosts
ORDER BY hosts.host_id;
