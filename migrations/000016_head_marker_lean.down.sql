-- Back to migration 000014's promotion and migration 000010's BEFORE
-- trigger.
LOCK TABLE jobs IN EXCLUSIVE MODE;

CREATE OR REPLACE FUNCTION rtm_jobs_head_promote(games text[], ended_ids bigint[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT SET enable_seqscan = off AS $$
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'rtmanager: end jobs % in a READ COMMITTED transaction, not %',
            ended_ids, current_setting('transaction_isolation')
            USING ERRCODE = 'feature_not_supported';
    END IF;
    PERFORM pg_advisory_xact_lock(1920233, k.key)
    FROM (SELECT DISTINCT hashtext(g) AS key FROM unnest(games) AS g ORDER BY 1) AS k
    ORDER BY k.key;
    PERFORM pg_advisory_xact_lock_shared(1920238, 0);
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

DROP TRIGGER jobs_head_restart ON jobs;

CREATE OR REPLACE FUNCTION rtm_jobs_head_restart() RETURNS trigger
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

DROP INDEX jobs_waiting_idx;
