ALTER TABLE hosts DROP COLUMN lease_expires_at;
