-- Fleet: one active agent per host, by a lease on the host row.
--
-- agent_id names the lease's holder; lease_expires_at (the database's
-- clock) is when it ends unless renewed. NULL: free (never leased, or
-- released at a clean shutdown). An agent acquires the lease with a
-- conditional INSERT ... ON CONFLICT DO UPDATE when it is free, expired or
-- already its own, renews it every ttl/3, and fences itself when it could
-- not renew in time. No session state is involved, so this works through a
-- transaction pooler (PgBouncer in transaction mode).
ALTER TABLE hosts ADD COLUMN lease_expires_at timestamptz;
