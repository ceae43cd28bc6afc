-- Back to the primary key on id and a plain index on (xid, id).
ALTER TABLE outbox DROP CONSTRAINT outbox_pkey;
ALTER TABLE outbox ADD CONSTRAINT outbox_pkey PRIMARY KEY (id);
CREATE INDEX outbox_xid_id_idx ON outbox (xid, id);
