-- golang-migrate's bookkeeping table, created by golang-migrate itself (not
-- by a migration). Described here only so that sqlc can type the query
-- that reads the schema version for /readyz.
CREATE TABLE schema_migrations (
    version bigint  NOT NULL PRIMARY KEY,
    dirty   boolean NOT NULL
);
