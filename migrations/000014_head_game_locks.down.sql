-- Back to the 65,536 bucket rows of migration 000013 as the head
-- marker's locks, with its functions.
LOCK TABLE jobs IN EXCLUSIVE MODE;

CREATE TABLE job_line_locks (
    bucket integer PRIMARY KEY CHECK (bucket BETWEEN 0 AND 65535)
);
INSERT INTO job_line_locks (bucket) SELECT generate_series(0, 65535);

CREATE OR REPLACE FUNCTION rtm_jobs_head_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT SET enable_seqscan = off AS $$
DECLARE
    ours boolean;
BEGIN
    IF NEW.status NOT IN ('queued', 'running') THEN
        NEW.is_head := false;
        RETURN NEW;
    END IF;
    NEW.is_head := true;
    IF NEW.status = 'running'
       OR current_setting('transaction_isolation') <> 'read committed' THEN
        RETURN NEW;
    END IF;
    -- The latest earlier unfinished job of the game, if any. The probe
    -- compares (game_id, id) as a row and bounds the game as a range, not
    -- an equality, so that only the (game_id, id) indexes serve it and
    -- give its order: with "game_id =" the primary key gives the order
    -- too (id descending), and statistics that call the table small
    -- (after a TRUNCATE) make that a walk of the whole table per row.
    -- Sequential scans are off for the same reason.
    SELECT e.xmin = xid(pg_current_xact_id()) INTO ours
    FROM jobs e
    WHERE e.game_id >= NEW.game_id AND e.game_id <= NEW.game_id
      AND (e.game_id, e.id) < (NEW.game_id, NEW.id)
      AND e.status IN ('queued', 'running')
    ORDER BY e.game_id DESC, e.id DESC
    LIMIT 1;
    IF NOT FOUND THEN
        -- None seen: the head, without a lock (most inserts: a game's
        -- first job, or one after its line emptied).
        RETURN NEW;
    END IF;
    IF ours THEN
        -- Behind a job this transaction inserted (the rows of one mass
        -- INSERT, a stop and a start queued together): nobody can end
        -- that job before we commit, and whoever ends it then sees us.
        NEW.is_head := false;
        RETURN NEW;
    END IF;
    PERFORM 1 FROM job_line_locks WHERE bucket = hashtext(NEW.game_id) & 65535 FOR SHARE SKIP LOCKED;
    IF FOUND THEN
        -- Held: a finish of this bucket's games waits for us from now on.
        -- A fresh snapshot, taken under the lock: a finish that committed
        -- before it is seen here; one that did not lock yet will see us.
        NEW.is_head := NOT EXISTS (
            SELECT 1 FROM jobs e
            WHERE e.game_id = NEW.game_id
              AND (e.game_id, e.id) < (NEW.game_id, NEW.id)
              AND e.status IN ('queued', 'running')
        );
    END IF;
    -- Not found: a finish of a game of this bucket is promoting. The
    -- head, which is always safe.
    RETURN NEW;
END;
$$;

CREATE OR REPLACE FUNCTION rtm_jobs_head_promote(games text[], ended_ids bigint[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT SET enable_seqscan = off AS $$
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        -- After the lock below only a fresh snapshot sees the inserts
        -- that held a bucket before it: a stricter isolation could leave
        -- the next job unmarked, never claimed. The agent writes in READ
        -- COMMITTED; refuse, rather than strand a job.
        RAISE EXCEPTION 'rtmanager: end jobs % in a READ COMMITTED transaction, not %',
            ended_ids, current_setting('transaction_isolation')
            USING ERRCODE = 'feature_not_supported';
    END IF;
    -- Waits for every insert that said "not the head" holding one of the
    -- games' buckets, in bucket order (promoters cannot deadlock; inserts
    -- never wait for us).
    PERFORM 1 FROM job_line_locks
    WHERE bucket IN (SELECT hashtext(g) & 65535 FROM unnest(games) AS g)
    ORDER BY bucket
    FOR UPDATE;
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
