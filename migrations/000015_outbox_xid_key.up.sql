-- The outbox's primary key becomes (xid, id), the order every reader
-- reads in, and the index on id alone goes: each event wrote four index
-- entries (id, (xid, id), created_at, (game_id, xid, id)) and now writes
-- three. Nothing looks an event up by id alone: readers resume after an
-- (xid, id) position, the console reads a game's events by (game_id,
-- xid, id) and retention deletes in (xid, id) order. id stays unique
-- (an identity), so (xid, id) is.
--
-- Rebuilds one index of the outbox under an ACCESS EXCLUSIVE lock: on a
-- large outbox, migrate at a quiet moment (writers of events wait).
ALTER TABLE outbox DROP CONSTRAINT outbox_pkey;
DROP INDEX outbox_xid_id_idx;
ALTER TABLE outbox ADD CONSTRAINT outbox_pkey PRIMARY KEY (xid, id);
