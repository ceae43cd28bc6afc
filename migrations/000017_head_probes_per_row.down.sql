-- Back to migration 000014's insert trigger and migration 000016's
-- promotion.

CREATE OR REPLACE FUNCTION rtm_jobs_head_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT SET enable_seqscan = off AS $$
DECLARE
    ours boolean;
    held integer;
    held_text text;
    cap integer;
    cap_text text;
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
    -- The latest earlier unfinished job of the game, if any (the probe's
    -- form: migration 000013).
    SELECT e.xmin = xid(pg_current_xact_id()) INTO ours
    FROM jobs e
    WHERE e.game_id >= NEW.game_id AND e.game_id <= NEW.game_id
      AND (e.game_id, e.id) < (NEW.game_id, NEW.id)
      AND e.status IN ('queued', 'running')
    ORDER BY e.game_id DESC, e.id DESC
    LIMIT 1;
    IF NOT FOUND THEN
        -- None seen: the head, without a lock (most inserts).
        RETURN NEW;
    END IF;
    IF ours THEN
        -- Behind a job this transaction inserted: nobody can end that job
        -- before we commit, and whoever ends it then sees us.
        NEW.is_head := false;
        RETURN NEW;
    END IF;
    -- Behind another transaction's job. rtm.head_lines_held counts the
    -- game locks this transaction took here, or is 'all' once it took the
    -- lines lock (both end with the transaction). A session can set either
    -- setting, so no value of them lets an insert say "not the head"
    -- without a lock: anything but a count takes the lines lock again,
    -- which costs a look in the backend's own lock table once held.
    held_text := coalesce(current_setting('rtm.head_lines_held', true), '');
    held := CASE WHEN held_text = '' THEN 0
                 WHEN held_text ~ '^[0-9]{1,9}$' THEN held_text::integer END;
    cap_text := coalesce(current_setting('rtm.head_line_locks', true), '');
    cap := CASE WHEN cap_text ~ '^[0-9]{1,9}$' THEN cap_text::integer
                ELSE current_setting('max_locks_per_transaction')::integer / 2 END;
    IF held < cap THEN
        IF NOT pg_try_advisory_xact_lock_shared(1920233, hashtext(NEW.game_id)) THEN
            -- A writer of the game holds its lock or waits for it.
            RETURN NEW;
        END IF;
        PERFORM set_config('rtm.head_lines_held', (held + 1)::text, true);
    ELSE
        PERFORM pg_advisory_xact_lock(1920238, 0);
        PERFORM set_config('rtm.head_lines_held', 'all', true);
    END IF;
    -- Held: the promotion in this game waits for us from now on. A fresh
    -- snapshot, taken under the lock: a promotion that committed before
    -- it is seen here; one that did not lock yet will see us.
    NEW.is_head := NOT EXISTS (
        SELECT 1 FROM jobs e
        WHERE e.game_id = NEW.game_id
          AND (e.game_id, e.id) < (NEW.game_id, NEW.id)
          AND e.status IN ('queued', 'running')
    );
    RETURN NEW;
END;
$$;

CREATE OR REPLACE FUNCTION rtm_jobs_head_promote(games text[], ended_ids bigint[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT SET enable_seqscan = off AS $$
DECLARE
    lined_games text[];
    lined_ids bigint[];
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        -- After the locks below only a fresh snapshot sees the inserts
        -- that held them before: a stricter isolation could leave the
        -- next job unmarked, never claimed. The agent writes in READ
        -- COMMITTED; refuse, rather than strand a job.
        RAISE EXCEPTION 'rtmanager: end jobs % in a READ COMMITTED transaction, not %',
            ended_ids, current_setting('transaction_isolation')
            USING ERRCODE = 'feature_not_supported';
    END IF;
    -- The games' locks in key order, the batch finish's order (every
    -- writer of the agent holds them already), then the lines lock.
    PERFORM pg_advisory_xact_lock(1920233, k.key)
    FROM (SELECT DISTINCT hashtext(g) AS key FROM unnest(games) AS g ORDER BY 1) AS k
    ORDER BY k.key;
    PERFORM pg_advisory_xact_lock_shared(1920238, 0);
    -- Fresh snapshots, after the locks (the probes' form: migration
    -- 000013). First the ended heads with an unmarked job after them:
    -- without one, the next unfinished job of the game is a head already,
    -- or there is none. A query of its own, not a condition of the UPDATE
    -- below: there the planner keeps the index's own conditions as a
    -- filter, read from the table, for every probe.
    SELECT array_agg(e.game_id), array_agg(e.id)
    INTO lined_games, lined_ids
    FROM unnest(games, ended_ids) AS e(game_id, id)
    WHERE EXISTS (
        SELECT 1 FROM jobs w
        WHERE w.game_id >= e.game_id AND w.game_id <= e.game_id
          AND (w.game_id, w.id) > (e.game_id, e.id)
          AND w.status IN ('queued', 'running')
          AND NOT w.is_head);
    IF lined_games IS NULL THEN
        RETURN;
    END IF;
    -- The next unfinished job after each, marked unless it is already.
    -- The ids are gathered first and the rows found by the primary key:
    -- joined with the table, the planner may hash all of it (it did,
    -- from the variables' generic plan).
    UPDATE jobs j SET is_head = true
    WHERE j.id = ANY (ARRAY(
        SELECT (SELECT x.id FROM jobs x
                WHERE x.game_id >= e.game_id AND x.game_id <= e.game_id
                  AND (x.game_id, x.id) > (e.game_id, e.id)
                  AND x.status IN ('queued', 'running')
                ORDER BY x.game_id, x.id
                LIMIT 1)
        FROM unnest(lined_games, lined_ids) AS e(game_id, id)))
      AND NOT j.is_head;
END;
$$;
