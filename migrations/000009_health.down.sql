ALTER TABLE runtime_records DROP COLUMN health;
DROP TABLE crash_reports;
