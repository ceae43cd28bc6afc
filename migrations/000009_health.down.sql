DROP TABLE crash_reports;
