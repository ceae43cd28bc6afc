ALTER TABLE jobs DROP CONSTRAINT IF EXISTS jobs_run_after_finite;
DROP TRIGGER IF EXISTS jobs_notify_cancel ON jobs;
DROP INDEX IF EXISTS jobs_cancel_requested_idx;
DROP INDEX IF EXISTS jobs_due_idx;
