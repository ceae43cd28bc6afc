-- Variant, not shipped: the head marker's locks as the games' own advisory
-- locks (pg_advisory_xact_lock(1920233, hashtext(game_id)), the lock every
-- writer of a game's record and events takes) instead of the bucket rows
-- of migration 000013.
--
-- The finish already holds its games' advisory locks when the promotion
-- runs, so taking them again there costs a look in the backend's own lock
-- table, where locking one bucket row per game writes the lock into the
-- row (a page dirtied, a WAL record) through its index. An insert that
-- would say "not the head" behind another transaction's job takes the
-- game's lock SHARED without waiting (pg_try_advisory_xact_lock_shared)
-- and looks again under it; without it the job is the head, always safe.
--
-- Priced in the queue bench at a 200,000-job backlog, two alternating
-- single rounds each (`make bench-river RIVER_FLAGS="-concurrency 2000
-- -pool 14 -sizes 200000 -rounds 1 -alongside 0 -growth=false -ours-sql
-- variants/head_game_locks.sql"` against the same without -ours-sql):
-- 3.5 to 7 % more jobs/s, about 3 µs a job less server CPU.
--
-- Not shipped, for what an insert would then hold. Advisory locks live in
-- the server's shared lock table (max_locks_per_transaction × connections:
-- 6,400 slots by default), row locks in the rows. One INSERT of 50,000
-- jobs, each behind another transaction's unfinished job of its game (a
-- mass operation over games still busy with the last one), would take
-- 50,000 of them and fail with "out of shared memory". Capping the locks a
-- transaction takes makes every job beyond the cap a head that is not the
-- first of its line: each claim of the host then probes every one of them
-- until their lines reach them, the cost the marker exists to remove. And
-- the agent's record writers would wait for such Game Master
-- transactions to commit, where only the finish does now.
LOCK TABLE jobs IN EXCLUSIVE MODE;

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
        RETURN NEW;
    END IF;
    IF ours THEN
        NEW.is_head := false;
        RETURN NEW;
    END IF;
    IF pg_try_advisory_xact_lock_shared(1920233, hashtext(NEW.game_id)) THEN
        -- Held: a promotion in this game waits for us from now on. A
        -- fresh snapshot, taken under the lock: a promotion that
        -- committed before it is seen here; one that did not lock yet
        -- will see us.
        NEW.is_head := NOT EXISTS (
            SELECT 1 FROM jobs e
            WHERE e.game_id = NEW.game_id
              AND (e.game_id, e.id) < (NEW.game_id, NEW.id)
              AND e.status IN ('queued', 'running')
        );
    END IF;
    -- Not had: a writer of the game holds its lock or waits for it. The
    -- head, which is always safe.
    RETURN NEW;
END;
$$;

CREATE OR REPLACE FUNCTION rtm_jobs_head_promote(games text[], ended_ids bigint[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT SET enable_seqscan = off AS $$
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'rtmanager: end jobs % in a READ COMMITTED transaction, not %',
            ended_ids, current_setting('transaction_isolation')
            USING ERRCODE = 'feature_not_supported';
    END IF;
    -- Waits for every insert that said "not the head" holding one of the
    -- games' locks, in key order, the order in which the batch finish
    -- takes them (promoters cannot deadlock; inserts never wait for us).
    -- The finish and every other writer of a game's events already hold
    -- the lock: taking it again costs nothing.
    PERFORM pg_advisory_xact_lock(1920233, k.key)
    FROM (SELECT DISTINCT hashtext(g) AS key FROM unnest(games) AS g ORDER BY 1) AS k
    ORDER BY k.key;
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
