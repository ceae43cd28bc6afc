DROP INDEX IF EXISTS runtime_records_stopped_last_op_idx;
DROP TABLE IF EXISTS outbox_consumers;
