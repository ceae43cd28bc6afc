-- rtmanager schema, version 3: outbox consumers and the sweeper's index.

-- Registered readers of the outbox and the (xid, id) position each has read
-- up to (inclusive). Retention deletes an outbox row only once every
-- registered consumer has read past it; with no consumer registered it
-- deletes by age alone. A consumer that stops reading therefore holds every
-- later row: unregister it (DELETE its row) when it goes away for good.
CREATE TABLE outbox_consumers (
    name       text        PRIMARY KEY,
    last_xid   xid8        NOT NULL DEFAULT '0',
    last_id    bigint      NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT outbox_consumers_name_not_blank CHECK (name !~ '^[[:space:]]*$'),
    CONSTRAINT outbox_consumers_last_id_not_negative CHECK (last_id >= 0)
);

-- Cleanup: the stopped records of one host, oldest operation first.
CREATE INDEX runtime_records_stopped_last_op_idx ON runtime_records (host_id, last_op_at, game_id)
    WHERE status = 'stopped';
