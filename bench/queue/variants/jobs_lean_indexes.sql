-- Variant, not shipped: two index entries fewer per job in jobs.
--
-- * A game's jobs in id order (console, client, ListJobsByGame) come
--   from an index over every job beside the partial index of the game's
--   unfinished jobs; here the finished ones get a partial index of their
--   own, so an insert and a claim write one entry fewer.
-- * Retention's finished_at index as BRIN: one B-tree entry fewer per
--   finish.
--
-- Priced together with migration 000015 (the outbox keyed by (xid, id)),
-- before it shipped, three alternating single rounds at 200,000: ours/River
-- 0.93, 1.04, 0.89 against 0.89, 0.91, 1.00 without the three; WAL 1,864
-- -> 1,668 bytes a job. Not shipped: within noise, and the first makes
-- every "newest jobs of a game" page (console, client) read all of the
-- game's jobs and sort them, or need a UNION of the two partial indexes;
-- a BRIN over a table whose rows are updated in place loses its ranges
-- as new versions fill freed space.
DROP INDEX jobs_game_id_idx;
CREATE INDEX jobs_game_finished_idx ON jobs (game_id, id) WHERE status NOT IN ('queued', 'running');
DROP INDEX jobs_finished_idx;
CREATE INDEX jobs_finished_idx ON jobs USING brin (finished_at);
