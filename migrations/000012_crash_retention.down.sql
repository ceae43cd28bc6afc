DROP INDEX IF EXISTS crash_reports_captured_idx;
