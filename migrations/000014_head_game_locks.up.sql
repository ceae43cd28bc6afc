-- The head marker's locks become advisory locks: the game's own, which
-- every writer of the game's record and events already takes
-- (pg_advisory_xact_lock(1920233, hashtext(game_id)), see LockGame), and
-- one lock for a transaction that queues many jobs behind others'. The
-- 65,536 bucket rows of migration 000013 go.
--
-- A bucket was a row: the finish that promoted locked one row per game
-- FOR UPDATE, which wrote the lock into the row (a page dirtied, a WAL
-- record) through its index, 3 µs a job of a 24 µs batch finish. The
-- finish already holds its games' advisory locks when it promotes (the
-- outbox's commit order needs them), so taking them again costs a look in
-- the backend's own lock table.
--
-- The rule is the buckets' rule. An insert that would say "not the head"
-- behind another transaction's job first takes a lock that the promotion
-- of that game waits for, then looks again with a fresh snapshot:
--
-- * the game's lock, SHARED, without waiting
--   (pg_try_advisory_xact_lock_shared). When a writer of the game holds
--   it or waits for it, the job is the head, which is always safe: the
--   claim keeps its guard.
-- * past rtm.head_line_locks such locks in one transaction (unless set,
--   half of max_locks_per_transaction, the share of the lock table each
--   transaction is sized for: 32 by default), the lines lock (1920238, 0)
--   EXCLUSIVE, waiting, and then no game lock any more. Advisory locks
--   live in the server's shared lock table (max_locks_per_transaction ×
--   connections, 6,400 slots by default), row locks in the rows: one
--   INSERT of 50,000 jobs behind others' would fill the table with game
--   locks. The lines lock is one slot; while it is held no promotion runs
--   anywhere, as while a mass insert held most buckets, so a transaction
--   that queues many jobs behind others' should commit at once.
--
-- The promotion takes the locks of the games it promotes in, in key order
-- (the order of the batch finish, which holds them already), then the
-- lines lock SHARED, then reads afresh: it waits for every insert that
-- said "not the head" against it. Promotions never wait for each other on
-- the lines lock, and take it after the games' locks, so an insert that
-- waits for it holding game locks waits for no promotion that waits for
-- those. Inserts never wait for a game's lock. A writer of a game's record
-- now also waits for an insert's transaction that holds the game's lock
-- SHARED (a finish always waited, on the game's bucket).

-- No job is inserted, ended or deleted under the old functions once this
-- commits, or while it runs.
LOCK TABLE jobs IN EXCLUSIVE MODE;

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
    -- A fresh snapshot, after the locks (the probe's form: migration
    -- 000013).
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
