-- Back to a line row per game (migration 000010), made by the game's
-- first insert.
LOCK TABLE jobs IN EXCLUSIVE MODE;

CREATE TABLE job_lines (
    game_id text PRIMARY KEY
);

INSERT INTO job_lines (game_id)
SELECT DISTINCT game_id FROM jobs WHERE status IN ('queued', 'running');

CREATE OR REPLACE FUNCTION rtm_jobs_head_insert() RETURNS trigger
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

CREATE OR REPLACE FUNCTION rtm_jobs_head_promote(games text[], ended_ids bigint[]) RETURNS void
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

DROP TABLE job_line_locks;
