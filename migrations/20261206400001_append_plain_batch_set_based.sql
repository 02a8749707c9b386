-- flexcore_append writes a batch's plain appends (events and a command-log entry only)
-- with one set-based statement in one sub-block, instead of one sub-block (one
-- subtransaction) per command; on a unique violation those commands fall back to the
-- per-command path, which gives each its exact outcome (issue 21). The signature stays.
-- The definition below repeats shared/eventstore/sql/flexcore_append.sql, its canonical
-- source.

DROP FUNCTION flexcore_append(jsonb, text[]);

CREATE FUNCTION flexcore_append(batch jsonb, bodies text[]) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    req       jsonb;
    c         jsonb;
    results   jsonb[];
    outcome   jsonb;
    positions jsonb;
    stored    jsonb;
    found_log record;
    key_owner uuid;
    in_use    bigint;
    cname     text;
    stale_id  text;
    any_ok    boolean := false;
    i         integer := 0;
    plain     integer[];
    written   jsonb;
BEGIN
    results := array_fill(NULL::jsonb, ARRAY[jsonb_array_length(batch)]);
    SELECT array_agg(t.n::integer) INTO plain
      FROM jsonb_array_elements(batch) WITH ORDINALITY AS t(r, n)
     WHERE jsonb_array_length(coalesce(t.r->'events', '[]')) > 0
       AND jsonb_array_length(coalesce(t.r->'claims', '[]')) = 0
       AND jsonb_array_length(coalesce(t.r->'releases', '[]')) = 0
       AND coalesce(jsonb_typeof(t.r->'slot_acquire'), 'null') <> 'object'
       AND coalesce(jsonb_typeof(t.r->'slot_release'), 'null') <> 'object'
       AND NOT t.r ? 'checks';
    IF plain IS NOT NULL THEN
        BEGIN
            WITH reqs AS (
                SELECT t.n::integer AS n, t.r
                  FROM jsonb_array_elements(batch) WITH ORDINALITY AS t(r, n)
                 WHERE t.n = ANY (plain)
            ), evs AS (
                SELECT reqs.n, e.m, (e.e->>'event_id')::uuid AS event_id, e.e
                  FROM reqs, jsonb_array_elements(reqs.r->'events') WITH ORDINALITY AS e(e, m)
            ), ins AS (
                INSERT INTO events (event_id, aggregate_type, aggregate_id, version, event_type,
                                    schema_version, data, metadata)
                SELECT evs.event_id, evs.e->>'aggregate_type', (evs.e->>'aggregate_id')::uuid,
                       (evs.e->>'version')::bigint, evs.e->>'event_type',
                       (evs.e->>'schema_version')::integer, bodies[(evs.e->>'body')::int]::json,
                       evs.e->'metadata'
                  FROM evs
                 ORDER BY evs.n, evs.m
                RETURNING event_id, global_position
            ), pos AS (
                SELECT evs.n, jsonb_agg(ins.global_position ORDER BY ins.global_position) AS positions,
                       max(ins.global_position) AS last
                  FROM ins JOIN evs USING (event_id)
                 GROUP BY evs.n
            ), logged AS (
                INSERT INTO command_log (command_id, command_type, payload_hash, reply)
                SELECT (reqs.r->>'command_id')::uuid, reqs.r->>'command_type', reqs.r->>'payload_hash',
                       coalesce(reqs.r->'reply', '{}'::jsonb) || jsonb_build_object('global_position', pos.last)
                  FROM reqs JOIN pos USING (n)
                 WHERE reqs.r->>'command_id' IS NOT NULL
            )
            SELECT jsonb_object_agg(pos.n::text, pos.positions) INTO written FROM pos;
            FOREACH i IN ARRAY plain LOOP
                results[i] := jsonb_build_object('status', 'ok', 'positions', written->(i::text));
            END LOOP;
            any_ok := true;
        EXCEPTION
            WHEN unique_violation THEN
                -- Rolled back: each of them takes the per-command path below.
                NULL;
        END;
    END IF;
    i := 0;
    FOR req IN SELECT value FROM jsonb_array_elements(batch) LOOP
        i := i + 1;
        CONTINUE WHEN results[i] IS NOT NULL;
        outcome := NULL;
        BEGIN
            IF req->>'command_id' IS NOT NULL THEN
                SELECT reply, command_type, payload_hash INTO found_log
                  FROM command_log WHERE command_id = (req->>'command_id')::uuid;
                IF FOUND THEN
                    results[i] := jsonb_build_object(
                        'status', 'duplicate', 'reply', found_log.reply,
                        'command_type', found_log.command_type, 'payload_hash', found_log.payload_hash);
                    CONTINUE;
                END IF;
            END IF;

            -- Aggregates the decision read from a cache must still be at the version it saw.
            -- One statement for all of them (a run.request has three or four).
            IF req ? 'checks' THEN
                SELECT chk->>'aggregate_id' INTO stale_id
                  FROM jsonb_array_elements(req->'checks') AS chk
                 WHERE coalesce((SELECT max(version) FROM events
                                  WHERE aggregate_id = (chk->>'aggregate_id')::uuid), 0)
                       <> (chk->>'version')::bigint
                 LIMIT 1;
                IF FOUND THEN
                    outcome := jsonb_build_object('status', 'stale', 'aggregate_id', stale_id);
                    RAISE EXCEPTION USING ERRCODE = 'FC001', MESSAGE = 'stale read';
                END IF;
            END IF;

            IF jsonb_array_length(coalesce(req->'releases', '[]')) > 0 THEN
                DELETE FROM unique_keys u
                 USING jsonb_to_recordset(req->'releases') AS r(scope text, key text, owner uuid)
                 WHERE u.scope = r.scope AND u.key = r.key AND u.owner = r.owner;
            END IF;
            FOR c IN SELECT value FROM jsonb_array_elements(coalesce(req->'claims', '[]')) LOOP
                INSERT INTO unique_keys (scope, key, owner)
                VALUES (c->>'scope', c->>'key', (c->>'owner')::uuid)
                ON CONFLICT DO NOTHING;
                IF NOT FOUND THEN
                    SELECT owner INTO key_owner FROM unique_keys WHERE scope = c->>'scope' AND key = c->>'key';
                    outcome := jsonb_build_object('status', 'unique_taken', 'scope', c->>'scope',
                                                  'key', c->>'key', 'owner', key_owner);
                    RAISE EXCEPTION USING ERRCODE = 'FC001', MESSAGE = 'unique key taken';
                END IF;
            END LOOP;

            IF jsonb_typeof(req->'slot_release') = 'object' THEN
                DELETE FROM run_slots
                 WHERE pool = (req->'slot_release'->>'pool')::uuid
                   AND holder = (req->'slot_release'->>'holder')::uuid;
            END IF;
            IF jsonb_typeof(req->'slot_acquire') = 'object' THEN
                -- Serialise acquisitions per pool so two commands cannot both take the last slot.
                PERFORM pg_advisory_xact_lock(hashtextextended('flexcore.slot.' || (req->'slot_acquire'->>'pool'), 0));
                SELECT count(*) INTO in_use FROM run_slots WHERE pool = (req->'slot_acquire'->>'pool')::uuid;
                IF in_use >= (req->'slot_acquire'->>'max')::bigint THEN
                    outcome := jsonb_build_object('status', 'slot_full', 'active', in_use,
                                                  'max', (req->'slot_acquire'->>'max')::bigint);
                    RAISE EXCEPTION USING ERRCODE = 'FC001', MESSAGE = 'slot pool full';
                END IF;
                INSERT INTO run_slots (pool, holder)
                VALUES ((req->'slot_acquire'->>'pool')::uuid, (req->'slot_acquire'->>'holder')::uuid);
            END IF;

            WITH ins AS (
                INSERT INTO events (event_id, aggregate_type, aggregate_id, version, event_type,
                                    schema_version, data, metadata)
                SELECT (e->>'event_id')::uuid, e->>'aggregate_type', (e->>'aggregate_id')::uuid,
                       (e->>'version')::bigint, e->>'event_type', (e->>'schema_version')::integer,
                       bodies[(e->>'body')::int]::json, e->'metadata'
                  FROM jsonb_array_elements(req->'events') WITH ORDINALITY AS t(e, n)
                 ORDER BY n
                RETURNING global_position
            )
            SELECT jsonb_agg(global_position ORDER BY global_position) INTO positions FROM ins;

            -- The caller builds its reply from the positions; the one stored answers a
            -- retry of the same command id.
            IF req->>'command_id' IS NOT NULL THEN
                stored := coalesce(req->'reply', '{}'::jsonb)
                          || jsonb_build_object('global_position', positions->-1);
                INSERT INTO command_log (command_id, command_type, payload_hash, reply)
                VALUES ((req->>'command_id')::uuid, req->>'command_type', req->>'payload_hash', stored);
            END IF;
            results[i] := jsonb_build_object('status', 'ok', 'positions', positions);
            any_ok := true;
        EXCEPTION
            WHEN unique_violation THEN
                GET STACKED DIAGNOSTICS cname = CONSTRAINT_NAME;
                IF cname = 'command_log_pkey' THEN
                    -- The same command id committed concurrently: answer with its reply.
                    SELECT reply, command_type, payload_hash INTO found_log
                      FROM command_log WHERE command_id = (req->>'command_id')::uuid;
                    results[i] := jsonb_build_object(
                        'status', 'duplicate', 'reply', found_log.reply,
                        'command_type', found_log.command_type, 'payload_hash', found_log.payload_hash);
                ELSE
                    results[i] := jsonb_build_object(
                        'status', 'conflict', 'constraint', cname);
                END IF;
            WHEN SQLSTATE 'FC001' THEN
                results[i] := outcome;
        END;
    END LOOP;
    IF any_ok THEN
        -- A wake-up hint for the relay: at most one per transaction.
        PERFORM pg_notify('flexcore_events', '');
    END IF;
    RETURN to_jsonb(results);
END
$$;
