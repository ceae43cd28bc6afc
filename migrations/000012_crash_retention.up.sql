-- Crash reports are pruned by age too (RTM_CRASH_RETENTION), oldest
-- first, in batches: the index keeps each batch a short range scan however
-- many reports the fleet holds.
CREATE INDEX crash_reports_captured_idx ON crash_reports (captured_at);
