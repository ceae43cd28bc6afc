DROP INDEX IF EXISTS runtime_records_status_game_id_c_idx;
DROP INDEX IF EXISTS runtime_records_host_game_id_c_idx;
DROP INDEX IF EXISTS runtime_records_game_id_c_idx;
DROP INDEX IF EXISTS jobs_game_id_idx;
DROP INDEX IF EXISTS outbox_game_xid_id_idx;
