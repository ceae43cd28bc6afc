DROP TRIGGER IF EXISTS outbox_notify_insert ON outbox;
DROP FUNCTION IF EXISTS rtm_outbox_notify();
DROP TABLE IF EXISTS outbox;
DROP TRIGGER IF EXISTS jobs_notify_insert ON jobs;
DROP FUNCTION IF EXISTS rtm_jobs_notify();
DROP TABLE IF EXISTS jobs;
DROP TABLE IF EXISTS runtime_records;
DROP TABLE IF EXISTS hosts;
