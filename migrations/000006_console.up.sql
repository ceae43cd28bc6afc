-- The operator console's pages (agent/console): a game's events and jobs
-- newest first, and the games list in bytewise game id order whatever the
-- database's collation (keyset pages and prefix search by id), whole or
-- of one host or one status.
CREATE INDEX IF NOT EXISTS outbox_game_xid_id_idx ON outbox (game_id, xid, id);
CREATE INDEX IF NOT EXISTS jobs_game_id_idx ON jobs (game_id, id);
CREATE INDEX IF NOT EXISTS runtime_records_game_id_c_idx ON runtime_records ((game_id COLLATE "C"));
CREATE INDEX IF NOT EXISTS runtime_records_host_game_id_c_idx ON runtime_records (host_id, (game_id COLLATE "C"));
CREATE INDEX IF NOT EXISTS runtime_records_status_game_id_c_idx ON runtime_records (status, (game_id COLLATE "C"));
