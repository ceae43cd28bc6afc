-- The claim reads only the jobs that head their game's line.
--
-- Before, the claim read every queued job of its host in id order and
-- probed each for an earlier unfinished job of its game: jobs waiting
-- behind their game's head cost every claim (20,000 probes to find 100
-- heads). Now each job carries is_head, and the claim indexes cover only
-- queued heads, so a claim costs its batch whatever waits behind.
--
-- is_head is a hint that may be true where it should not be (the claim
-- keeps its "no earlier unfinished job" guard, now over the candidates
-- only, so order holds) but is never false on the lowest unfinished job of
-- a game once the writes that concern it have committed (or that job would
-- wait forever). Triggers keep it, so the Game Master's INSERT and UPDATE
-- stay as the contract writes them:
--
-- * An insert is the head unless an earlier unfinished job of its game is
--   visible. The race to close: an insert that sees an earlier job still
--   unfinished while that job's finish, not yet committed, looks for the
--   next job to promote and cannot see the insert. Both sides therefore
--   lock the game's row in job_lines. An insert decides "not the head"
--   only while it holds the row FOR SHARE, taken with SKIP LOCKED so that
--   an insert never waits for a finish: a locked row, or a game without a
--   committed line, makes the insert the head, which is safe (the first
--   insert of a game makes its line). The finish that promotes takes the
--   row FOR UPDATE, so it waits for every insert that decided "not the
--   head" against it to commit, and then, reading afresh, sees them. A
--   finish never makes a line (so an insert never waits for a finish, and
--   the two cannot deadlock). Row locks live in the rows, not the lock
--   table, so a 50,000-row INSERT stays possible.
-- * A job that becomes running (or queued again, or unfinished again) is
--   the head: running is what a head does.
-- * When a head finishes or is deleted, the next unfinished job of its
--   game (the first after it in id order, an O(1) index step) becomes the
--   head, once per statement for all the heads it ended. A job that was
--   not the head finishing changes nothing: the lowest unfinished job is
--   still the same, and still marked. The agent's finishes and cancels of
--   one game are serialised by the game's advisory lock, so no two ends
--   of one game's jobs race.
--
-- Promoters of one game serialise on the job_lines row (and the agent's
-- finishes on the game's advisory lock before that).
--
-- In REPEATABLE READ or SERIALIZABLE a statement does not read afresh
-- after its lock, so an insert there is always the head (the guard keeps
-- the order), and a head's end there is refused (the agent ends jobs in
-- READ COMMITTED, PostgreSQL's default).
--
-- The trigger functions are SECURITY DEFINER: the Game Master's role may
-- insert jobs but has no rights on job_lines.

-- ACCESS EXCLUSIVE until the migration commits: no job is inserted or
-- finished unseen by the backfill below.
ALTER TABLE jobs ADD COLUMN is_head boolean NOT NULL DEFAULT false;

-- One row per game, made by the game's first insert and kept: what
-- inserts and promotions lock. Games with unfinished jobs get theirs here.
CREATE TABLE job_lines (
    game_id text PRIMARY KEY
);

INSERT INTO job_lines (game_id)
SELECT DISTINCT game_id FROM jobs WHERE status IN ('queued', 'running');

UPDATE jobs SET is_head = true
WHERE id IN (
    SELECT DISTINCT ON (game_id) id
    FROM jobs
    WHERE status IN ('queued', 'running')
    ORDER BY game_id, id
);

CREATE FUNCTION rtm_jobs_head_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT SET enable_seqscan = off AS $$
BEGIN
    IF NEW.status NOT IN ('queued', 'running') THEN
        NEW.is_head := false;
        RETURN NEW;
    END IF;
    IF NEW.status = 'running'
       OR current_setting('transaction_isolation') <> 'read committed' THEN
        NEW.is_head := true;
        RETURN NEW;
    END IF;
    PERFORM 1 FROM job_lines WHERE game_id = NEW.game_id FOR SHARE SKIP LOCKED;
    IF FOUND THEN
        -- Held: a finish of this game waits for us from now on. A fresh
        -- snapshot, taken under the lock: a finish that committed before
        -- it is seen here; one that did not lock yet will see us. The
        -- probe compares (game_id, id) as a row, which only the (game_id,
        -- id) indexes serve: "id < $n" would let the primary key in, and
        -- statistics that call the table small (after a TRUNCATE) make
        -- that a walk of the whole table per row. Sequential scans are off
        -- for the same reason.
        NEW.is_head := NOT EXISTS (
            SELECT 1 FROM jobs e
            WHERE e.game_id = NEW.game_id
              AND (e.game_id, e.id) < (NEW.game_id, NEW.id)
              AND e.status IN ('queued', 'running')
        );
        RETURN NEW;
    END IF;
    -- A finish of this game is promoting (the row is locked), or the game
    -- has no line yet, or its line is being made by another insert: the
    -- head, which is always safe.
    NEW.is_head := true;
    IF NOT EXISTS (SELECT 1 FROM job_lines WHERE game_id = NEW.game_id) THEN
        -- Make the line for the game's later inserts, ours included (they
        -- come after this head). Waits only for another insert making the
        -- same line, as an equal idempotency key would; never for a finish,
        -- which never makes lines.
        INSERT INTO job_lines (game_id) VALUES (NEW.game_id) ON CONFLICT DO NOTHING;
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER jobs_head_insert BEFORE INSERT ON jobs
    FOR EACH ROW EXECUTE FUNCTION rtm_jobs_head_insert();

-- Same row, no extra write: a job that starts running, is queued again or
-- becomes unfinished again heads its line.
CREATE FUNCTION rtm_jobs_head_restart() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.is_head := true;
    RETURN NEW;
END;
$$;

CREATE TRIGGER jobs_head_restart BEFORE UPDATE OF status ON jobs
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          AND NEW.status IN ('queued', 'running')
          AND NOT OLD.is_head)
    EXECUTE FUNCTION rtm_jobs_head_restart();

-- The promotion runs once per statement, over the heads it ended (a batch
-- finish ends hundreds): a trigger per row cost ~45 µs a job, most of the
-- finish. The transition tables list the statement's rows; a statement
-- trigger cannot be limited to a column, so every UPDATE of jobs calls it,
-- and it returns at once when no head ended.
CREATE FUNCTION rtm_jobs_head_promote(games text[], ended_ids bigint[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT SET enable_seqscan = off AS $$
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        -- After the lock below only a fresh snapshot sees the inserts
        -- that held the line before it: a stricter isolation could leave
        -- the next job unmarked, never claimed. The agent writes in READ
        -- COMMITTED; refuse, rather than strand a job.
        RAISE EXCEPTION 'rtmanager: end jobs % in a READ COMMITTED transaction, not %',
            ended_ids, current_setting('transaction_isolation')
            USING ERRCODE = 'feature_not_supported';
    END IF;
    -- Waits for every insert that said "not the head" holding a line, in
    -- game order (promoters cannot deadlock; inserts never wait for us).
    -- No line (or one not committed yet): no insert can have said so
    -- against this finish but the line's maker, whose first job of the
    -- game is a head, so its later ones are not the lowest.
    PERFORM 1 FROM job_lines WHERE game_id = ANY(games) ORDER BY game_id FOR UPDATE;
    -- A fresh snapshot, after the locks. The game is bounded as a range,
    -- not an equality, so that only the (game_id, id) indexes give this
    -- order: the primary key (id order, game filtered) would read the
    -- whole table when statistics say it is small, as after a TRUNCATE.
    UPDATE jobs j SET is_head = true
    FROM (
        SELECT (SELECT x.id FROM jobs x
                WHERE x.game_id >= e.game_id AND x.game_id <= e.game_id
                  AND (x.game_id, x.id) > (e.game_id, e.id)
                  AND x.status IN ('queued', 'running')
                ORDER BY x.game_id, x.id
                LIMIT 1) AS next
        FROM unnest(games, ended_ids) AS e(game_id, id)
    ) s
    WHERE j.id = s.next AND NOT j.is_head;
END;
$$;

CREATE FUNCTION rtm_jobs_head_finish() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    games text[];
    ended_ids bigint[];
BEGIN
    -- Only the new rows: a join with the old ones (to keep the heads
    -- that ended in this very statement) cost ~5 ms per statement and
    -- capturing them as much again, on every claim and lease renewal too.
    -- A head that had ended before and is updated again is promoted from
    -- again, which changes nothing: the first unfinished job after a head
    -- that ended is its game's lowest unfinished one, already marked.
    SELECT array_agg(n.game_id ORDER BY n.game_id, n.id), array_agg(n.id ORDER BY n.game_id, n.id)
    INTO games, ended_ids
    FROM ended_new n
    WHERE n.is_head AND n.status NOT IN ('queued', 'running');
    IF games IS NOT NULL THEN
        PERFORM rtm_jobs_head_promote(games, ended_ids);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_head_finish AFTER UPDATE ON jobs
    REFERENCING NEW TABLE AS ended_new
    FOR EACH STATEMENT EXECUTE FUNCTION rtm_jobs_head_finish();

CREATE FUNCTION rtm_jobs_head_delete() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    games text[];
    ended_ids bigint[];
BEGIN
    SELECT array_agg(o.game_id ORDER BY o.game_id, o.id), array_agg(o.id ORDER BY o.game_id, o.id)
    INTO games, ended_ids
    FROM ended_old o
    WHERE o.is_head AND o.status IN ('queued', 'running');
    IF games IS NOT NULL THEN
        PERFORM rtm_jobs_head_promote(games, ended_ids);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_head_delete AFTER DELETE ON jobs
    REFERENCING OLD TABLE AS ended_old
    FOR EACH STATEMENT EXECUTE FUNCTION rtm_jobs_head_delete();

-- The claim: the queued heads of one host in id order.
CREATE INDEX jobs_head_idx ON jobs (host_id, id) WHERE status = 'queued' AND is_head;
-- The claim's "next due": the queued heads of one host in run_after order.
CREATE INDEX jobs_head_due_idx ON jobs (host_id, run_after) WHERE status = 'queued' AND is_head;
-- jobs_due_idx (every queued job of a host) stays for the fleet's queue
-- depth; jobs_claim_idx has no reader left.
DROP INDEX jobs_claim_idx;

-- A cancel asked for a job an agent holds (running, or claimed into its
-- prefetch buffer and not started) wakes that host's agent on a channel
-- of its own, so that it renews its leases at once and learns of the
-- cancel there, instead of at its next renewal. (A queued job's cancel
-- keeps waking the claim on rtm_jobs.) Payload: the host id.
CREATE FUNCTION rtm_jobs_notify_cancel_held() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('rtm_jobs_cancel', NEW.host_id);
    RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_notify_cancel_held AFTER UPDATE OF cancel_requested_at ON jobs
    FOR EACH ROW
    WHEN (NEW.status = 'running'
          AND NEW.cancel_requested_at IS NOT NULL
          AND OLD.cancel_requested_at IS DISTINCT FROM NEW.cancel_requested_at)
    EXECUTE FUNCTION rtm_jobs_notify_cancel_held();
