-- Variant, not shipped: the outbox's created_at index as BRIN instead of
-- a B-tree, one of the four index entries each event writes.
--
-- The outbox is appended to in created_at order, so a BRIN index serves
-- the console's events per minute; retention reads the outbox in id order
-- anyway. Priced in the queue bench at a 200,000-job backlog, two
-- alternating single rounds each (`make bench-river RIVER_FLAGS="...
-- -ours-sql variants/outbox_created_at_brin.sql"`): WAL about 65 bytes a
-- job less, jobs/s within the rounds' noise. Not shipped for that.
DROP INDEX outbox_created_at_idx;
CREATE INDEX outbox_created_at_idx ON outbox USING brin (created_at);
