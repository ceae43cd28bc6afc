-- Two costs of the head marker (migration 000010) that every finish paid.
--
-- 1. jobs_head_restart was a BEFORE UPDATE row trigger. PostgreSQL runs a
--    table's BEFORE UPDATE row triggers on a locked copy of the row: it
--    locks each row an UPDATE of jobs changes before it looks at the
--    trigger's columns or WHEN clause. So every finish, renewal, requeue
--    and cancel locked each row first, a WAL record (56 bytes) per job,
--    to find that the trigger had nothing to do.
--    The trigger is now an AFTER row trigger, whose WHEN clause is looked
--    at without a lock; in the rare case it holds (a job that was not its
--    game's head becomes queued or running: a job made unfinished again,
--    or one set running by hand) it marks the row the head with a second
--    update, in the same transaction, so what commits is what the BEFORE
--    trigger wrote.
--
-- 2. The promotion looked, for each head that ended, for the next
--    unfinished job of its game: a probe of jobs_game_unfinished_idx (every
--    queued and running job) per job finished, and an UPDATE, although the
--    next job is nearly always already a head or absent (a game's one
--    job). What it needs first is whether any job behind the head waits
--    unmarked, and those jobs now have a partial index of their own, empty
--    when no game has a line: that probe reads one page, and when no game
--    of the batch has such a job the promotion ends there. The games that
--    do have one pay the probe of migration 000014 as well (a game with a
--    line pays two probes per job where it paid one). A waiting job leaves
--    the index when it is promoted, started or ended; it enters it at its
--    insert, one index entry more for each job queued behind another.
--
-- The rest of the rule (migrations 000010 and 000014) is unchanged: an
-- insert that says "not the head" writes its row, and so its entry here,
-- before it commits, and the promotion reads this index after its locks,
-- with a fresh snapshot, as it read the other.

LOCK TABLE jobs IN EXCLUSIVE MODE;

CREATE INDEX jobs_waiting_idx ON jobs (game_id, id)
    WHERE status IN ('queued', 'running') AND NOT is_head;

DROP TRIGGER jobs_head_restart ON jobs;

CREATE OR REPLACE FUNCTION rtm_jobs_head_restart() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE jobs SET is_head = true WHERE id = NEW.id AND NOT is_head;
    RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_head_restart AFTER UPDATE OF status ON jobs
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          AND NEW.status IN ('queued', 'running')
          AND NOT NEW.is_head)
    EXECUTE FUNCTION rtm_jobs_head_restart();

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
