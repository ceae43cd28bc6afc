-- Scheduled jobs on time, and cancel requests at once.
--
-- The claim statement also reports when the host's next job falls due, so
-- the agent arms a timer for it instead of waiting for the next poll. What
-- matters is the head of each game's line (a game's later job waits for its
-- earlier one), read in run_after order from now on: this index serves it.
CREATE INDEX jobs_due_idx ON jobs (host_id, run_after) WHERE status = 'queued';

-- Queued jobs whose cancel was asked for (UPDATE jobs SET
-- cancel_requested_at = now() ...): the claim statement lists them,
-- whatever their run_after, for the agent to cancel at once. Almost always
-- empty.
CREATE INDEX jobs_cancel_requested_idx ON jobs (host_id, id)
    WHERE status = 'queued' AND cancel_requested_at IS NOT NULL;

-- Wake the host's agent when a queued job's cancel is asked for, as an
-- insert does (same channel, same payload: the host id). The trigger only
-- notifies: the agent cancels the job and writes its job.cancelled event in
-- a transaction of its own that takes the game's lock before its first
-- write, which a trigger inside the Game Master's transaction (which may
-- have written already) could not do. A running job's cancel is seen at the
-- next lease renewal instead.
CREATE TRIGGER jobs_notify_cancel AFTER UPDATE OF cancel_requested_at ON jobs
    FOR EACH ROW
    WHEN (NEW.status = 'queued'
          AND NEW.cancel_requested_at IS NOT NULL
          AND OLD.cancel_requested_at IS DISTINCT FROM NEW.cancel_requested_at)
    EXECUTE FUNCTION rtm_jobs_notify();

-- run_after must be a time: a job due at -infinity could not be read into
-- the agent (its claim failed for the whole host), and one due at infinity
-- cannot be counted down to. Rows written before keep their meaning: due
-- at once, or at the latest time PostgreSQL knows.
UPDATE jobs SET run_after = created_at WHERE run_after = '-infinity';
UPDATE jobs SET run_after = '294276-12-31 23:59:59.999999+00' WHERE run_after = 'infinity';
ALTER TABLE jobs ADD CONSTRAINT jobs_run_after_finite CHECK (isfinite(run_after));
