-- Crash reports: the last lines an engine printed before an exit no job
-- asked for (observed die, reconciled exit, OOM), captured before the
-- transition that reports the exit commits and written in its transaction.
-- The lines are the engine's untrusted output, sanitised by the agent
-- (valid UTF-8, control characters escaped; see package crash) and bounded:
-- a JSON array of {"stream": "stdout"|"stderr", "text": "..."}. Writing a
-- report prunes the game's older ones beyond the last ten.
CREATE TABLE crash_reports (
    id             bigserial PRIMARY KEY,
    game_id        text        NOT NULL,
    host_id        text        NOT NULL,
    container_id   text        NOT NULL,
    exit_code      integer,
    oom            boolean     NOT NULL DEFAULT false,
    exited_at      timestamptz NOT NULL,
    captured_at    timestamptz NOT NULL DEFAULT now(),
    lines          jsonb       NOT NULL DEFAULT '[]',
    truncated      boolean     NOT NULL DEFAULT false,
    capture_error  text,
    outbox_id      bigint,
    CONSTRAINT crash_reports_lines_check CHECK (jsonb_typeof(lines) = 'array'),
    CONSTRAINT crash_reports_lines_size_check CHECK (octet_length(lines::text) <= 1048576)
);
CREATE INDEX crash_reports_game_idx ON crash_reports (game_id, id DESC);

-- The health of the running engine, as Docker's health check says: kept
-- beside the record's seed fields (RuntimeRecord.Validate says nothing of
-- it). 'none' when the engine has no check or does not run; a new
-- container, a new start or an exit resets it to 'none' (UpsertRecord),
-- and the watcher or a relist sets it from Docker.
ALTER TABLE runtime_records
    ADD COLUMN health text NOT NULL DEFAULT 'none',
    ADD CONSTRAINT runtime_records_health_check CHECK (
        health IN ('none', 'starting', 'healthy', 'unhealthy')
        AND (health = 'none' OR status = 'running'));
