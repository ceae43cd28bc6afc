-- rtmanager schema, version 1.
--
-- runtime_records mirrors internal/domain/runtime.RuntimeRecord: every rule of
-- RuntimeRecord.Validate is repeated here as a CHECK constraint so that a bad
-- row is refused by the database too, whoever writes it. Go's zero time
-- (0001-01-01 UTC) is what a non-nil but zero time.Time becomes, so "must not
-- be zero" is written as a comparison with it.

CREATE TABLE hosts (
    host_id            text        PRIMARY KEY,
    -- Identity of the agent process that last registered for this host.
    agent_id           text        NOT NULL,
    agent_version      text        NOT NULL DEFAULT '',
    started_at         timestamptz NOT NULL DEFAULT now(),
    heartbeat_at       timestamptz NOT NULL DEFAULT now(),
    -- Docker daemon time (timeNano) of the last applied Docker event.
    event_cursor_nanos bigint      NOT NULL DEFAULT 0,
    created_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT hosts_host_id_not_blank CHECK (host_id !~ '^[[:space:]]*$'),
    CONSTRAINT hosts_event_cursor_not_negative CHECK (event_cursor_nanos >= 0)
);

CREATE TABLE runtime_records (
    game_id              text        PRIMARY KEY,
    host_id              text        NOT NULL,
    status               text        NOT NULL,
    current_container_id text,
    current_image_ref    text,
    engine_endpoint      text        NOT NULL,
    state_path           text        NOT NULL,
    docker_network       text        NOT NULL,
    started_at           timestamptz,
    stopped_at           timestamptz,
    removed_at           timestamptz,
    last_op_at           timestamptz NOT NULL,
    created_at           timestamptz NOT NULL,

    CONSTRAINT runtime_records_game_id_not_blank CHECK (game_id !~ '^[[:space:]]*$'),
    CONSTRAINT runtime_records_host_id_not_blank CHECK (host_id !~ '^[[:space:]]*$'),
    CONSTRAINT runtime_records_status_known CHECK (status IN ('running', 'stopped', 'removed')),
    CONSTRAINT runtime_records_engine_endpoint_not_blank CHECK (engine_endpoint !~ '^[[:space:]]*$'),
    CONSTRAINT runtime_records_state_path_not_blank CHECK (state_path !~ '^[[:space:]]*$'),
    CONSTRAINT runtime_records_docker_network_not_blank CHECK (docker_network !~ '^[[:space:]]*$'),
    CONSTRAINT runtime_records_last_op_at_not_zero CHECK (last_op_at <> '0001-01-01 00:00:00+00'),
    CONSTRAINT runtime_records_created_at_not_zero CHECK (created_at <> '0001-01-01 00:00:00+00'),
    CONSTRAINT runtime_records_last_op_not_before_created CHECK (last_op_at >= created_at),
    CONSTRAINT runtime_records_running_shape CHECK (
        status <> 'running' OR (
            coalesce(current_container_id, '') !~ '^[[:space:]]*$'
            AND coalesce(current_image_ref, '') !~ '^[[:space:]]*$'
            AND started_at IS NOT NULL
        )
    ),
    CONSTRAINT runtime_records_stopped_shape CHECK (
        status <> 'stopped' OR (
            coalesce(current_image_ref, '') !~ '^[[:space:]]*$'
            AND stopped_at IS NOT NULL
        )
    ),
    CONSTRAINT runtime_records_removed_shape CHECK (status <> 'removed' OR removed_at IS NOT NULL),
    CONSTRAINT runtime_records_started_at_not_zero CHECK (started_at IS NULL OR started_at <> '0001-01-01 00:00:00+00'),
    CONSTRAINT runtime_records_stopped_at_not_zero CHECK (stopped_at IS NULL OR stopped_at <> '0001-01-01 00:00:00+00'),
    CONSTRAINT runtime_records_removed_at_not_zero CHECK (removed_at IS NULL OR removed_at <> '0001-01-01 00:00:00+00'),
    CONSTRAINT runtime_records_started_not_before_created CHECK (started_at IS NULL OR started_at >= created_at),
    CONSTRAINT runtime_records_stopped_not_before_started CHECK (stopped_at IS NULL OR started_at IS NULL OR stopped_at >= started_at),
    CONSTRAINT runtime_records_removed_not_before_created CHECK (removed_at IS NULL OR removed_at >= created_at)
);

-- The reconciler and the sweeper read the records of one host.
CREATE INDEX runtime_records_host_status_idx ON runtime_records (host_id, status);

-- Lifecycle jobs, written by the Game Master (untrusted: kind, game id and
-- payload are validated by the agent, which fails a bad job with a clear
-- error). kind is deliberately not constrained so that an older agent fails a
-- job of a kind it does not know instead of the Game Master's insert failing
-- during a rolling upgrade.
CREATE TABLE jobs (
    id                  bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    host_id             text        NOT NULL,
    game_id             text        NOT NULL,
    kind                text        NOT NULL,
    payload             jsonb       NOT NULL DEFAULT '{}'::jsonb,
    status              text        NOT NULL DEFAULT 'queued',
    idempotency_key     text,
    -- W3C trace context of the Game Master's span that enqueued the job.
    traceparent         text,
    attempt             integer     NOT NULL DEFAULT 0,
    -- 0 means the agent's default for the kind.
    max_attempts        integer     NOT NULL DEFAULT 0,
    run_after           timestamptz NOT NULL DEFAULT now(),
    lease_owner         text,
    lease_expires_at    timestamptz,
    cancel_requested_at timestamptz,
    last_error          text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    started_at          timestamptz,
    finished_at         timestamptz,

    CONSTRAINT jobs_status_known CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    CONSTRAINT jobs_attempt_not_negative CHECK (attempt >= 0),
    CONSTRAINT jobs_max_attempts_range CHECK (max_attempts BETWEEN 0 AND 100),
    CONSTRAINT jobs_running_has_lease CHECK (
        status <> 'running' OR (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL)
    ),
    CONSTRAINT jobs_final_has_finished_at CHECK (
        status NOT IN ('succeeded', 'failed', 'cancelled') OR finished_at IS NOT NULL
    ),
    CONSTRAINT jobs_idempotency_key_per_game UNIQUE (game_id, idempotency_key)
);

-- Claim: the queued jobs of one host in id order. Partial, so finished jobs
-- (most of the table) cost the claim nothing.
CREATE INDEX jobs_claim_idx ON jobs (host_id, id) WHERE status = 'queued';
-- Per-game FIFO: "is there an earlier unfinished job of this game?"
CREATE INDEX jobs_game_unfinished_idx ON jobs (game_id, id) WHERE status IN ('queued', 'running');
-- Lease rescue: running jobs whose lease expired.
CREATE INDEX jobs_lease_idx ON jobs (lease_expires_at) WHERE status = 'running';
-- Retention: finished jobs by age.
CREATE INDEX jobs_finished_idx ON jobs (finished_at) WHERE finished_at IS NOT NULL;

-- Wake idle agents on insert. The payload is the host id: an agent ignores
-- notifications for other hosts. Polling remains the fallback.
CREATE FUNCTION rtm_jobs_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('rtm_jobs', NEW.host_id);
    RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_notify_insert AFTER INSERT ON jobs
    FOR EACH ROW EXECUTE FUNCTION rtm_jobs_notify();

-- The outbox. Identity ids are assigned at insert, not at commit, so a reader
-- of "id > last" would skip rows that commit late. Each row therefore carries
-- the id of the transaction that wrote it: a reader takes only rows whose xid
-- is below the xmin of the current snapshot (every such transaction has
-- finished) in (xid, id) order, and resumes after the last (xid, id) it saw.
-- Writers of one game serialise on a per-game advisory lock taken before
-- their first write, so the events of one game are also in commit order.
CREATE TABLE outbox (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    xid        xid8        NOT NULL DEFAULT pg_current_xact_id(),
    type       text        NOT NULL,
    host_id    text        NOT NULL,
    game_id    text        NOT NULL,
    job_id     bigint,
    payload    jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX outbox_xid_id_idx ON outbox (xid, id);
CREATE INDEX outbox_created_at_idx ON outbox (created_at);

CREATE FUNCTION rtm_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('rtm_outbox', '');
    RETURN NULL;
END;
$$;

-- One notification per transaction, not per row.
CREATE TRIGGER outbox_notify_insert AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION rtm_outbox_notify();
