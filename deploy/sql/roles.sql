-- rtmanager database roles: least privilege for the Game Master and the
-- agents. Run it as the owner of the schema (the role that ran
-- `rtmanager migrate up`), in the rtmanager database, after every
-- migration (it is idempotent):
--
--   psql "$OWNER_URL" -v ON_ERROR_STOP=1 \
--        -v gm_role=galaxy_gm       -v gm_password="$GM_PASSWORD" \
--        -v agent_role=rtm_agent    -v agent_password="$AGENT_PASSWORD" \
--        -f deploy/sql/roles.sql
--
-- Roles are cluster-wide; the grants are on this database's tables.
--
-- Game Master (gm_role): inserts jobs (only the columns of the contract:
-- status, attempts, leases and errors stay the agents'), asks for a cancel
-- (cancel_requested_at only), reads records, jobs, hosts and the outbox,
-- and keeps its consumer cursors. It cannot change a record, an event or
-- a job's state. rtmclient.CancelJob (immediate cancel of a queued job)
-- writes the job's state and its event, so it needs the agent role: the
-- Game Master cancels with UPDATE jobs SET cancel_requested_at = now().
--
-- Agent (agent_role): runs the agent with RTM_AUTO_MIGRATE=false (the
-- schema's owner migrates); reads and writes jobs, records, hosts, the
-- outbox and consumer cursors, and deletes only what retention prunes
-- (jobs, outbox rows). It owns nothing, so it cannot alter or drop the
-- schema.

SELECT format('CREATE ROLE %I LOGIN', :'gm_role')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'gm_role') \gexec
SELECT format('CREATE ROLE %I LOGIN', :'agent_role')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'agent_role') \gexec
ALTER ROLE :"gm_role" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'gm_password';
ALTER ROLE :"agent_role" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'agent_password';

-- Start from nothing on our tables, so that re-running narrows too.
REVOKE ALL ON jobs, runtime_records, outbox, hosts, outbox_consumers, schema_migrations FROM PUBLIC;
REVOKE ALL ON jobs, runtime_records, outbox, hosts, outbox_consumers, schema_migrations FROM :"gm_role", :"agent_role";
GRANT USAGE ON SCHEMA public TO :"gm_role", :"agent_role";

-- Game Master.
GRANT SELECT ON jobs, runtime_records, outbox, hosts, outbox_consumers TO :"gm_role";
GRANT INSERT (host_id, game_id, kind, payload, idempotency_key, traceparent, max_attempts, run_after) ON jobs TO :"gm_role";
GRANT UPDATE (cancel_requested_at) ON jobs TO :"gm_role";
GRANT INSERT, UPDATE, DELETE ON outbox_consumers TO :"gm_role";

-- Agent.
GRANT SELECT ON schema_migrations TO :"agent_role";
GRANT SELECT, INSERT, UPDATE ON jobs, runtime_records, hosts, outbox TO :"agent_role";
GRANT DELETE ON jobs, outbox TO :"agent_role";
GRANT SELECT, INSERT, UPDATE, DELETE ON outbox_consumers TO :"agent_role";
