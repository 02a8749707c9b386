-- FlexCore event store: the append-only log (source of truth), the command log
-- (idempotency), command-side constraint tables, and the relay checkpoint.

CREATE TABLE events (
    global_position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The writing transaction: readers of the global log order by (transaction_id,
    -- global_position) and stop below the oldest running transaction, so an event that
    -- commits late with a lower position is never skipped.
    transaction_id  xid8        NOT NULL DEFAULT pg_current_xact_id(),
    event_id        uuid        NOT NULL UNIQUE,
    aggregate_type  text        NOT NULL,
    aggregate_id    uuid        NOT NULL,
    version         bigint      NOT NULL CHECK (version > 0),
    event_type      text        NOT NULL,
    schema_version  integer     NOT NULL,
    data            jsonb       NOT NULL,
    metadata        jsonb       NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT events_aggregate_version UNIQUE (aggregate_id, version)
);

CREATE INDEX events_transaction_order ON events (transaction_id, global_position);
CREATE INDEX events_type_time ON events (event_type, recorded_at);

-- The log is immutable: erasure will be a separate mechanism (crypto-shredding).
CREATE FUNCTION flexcore_events_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the events table is append-only (% refused)', TG_OP;
END
$$;
CREATE TRIGGER events_no_update_delete BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION flexcore_events_immutable();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION flexcore_events_immutable();

-- Processed command ids with their reply, written in the same transaction as the events.
CREATE TABLE command_log (
    command_id   uuid PRIMARY KEY,
    command_type text        NOT NULL,
    payload_hash text        NOT NULL,
    reply        jsonb       NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);

-- Command-side uniqueness (pipeline names), maintained with the events.
CREATE TABLE unique_keys (
    scope text NOT NULL,
    key   text NOT NULL,
    owner uuid NOT NULL,
    PRIMARY KEY (scope, key)
);

-- Active runs per pipeline (max active runs), maintained with the events.
CREATE TABLE run_slots (
    pool   uuid NOT NULL,
    holder uuid NOT NULL,
    PRIMARY KEY (pool, holder)
);

-- Where the outbox relay has published up to, in (transaction_id, global_position) order.
CREATE TABLE relay_checkpoints (
    name            text PRIMARY KEY,
    transaction_id  xid8        NOT NULL,
    global_position bigint      NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
INSERT INTO relay_checkpoints (name, transaction_id, global_position) VALUES ('events', '0', 0);

-- Appends a batch of commands in ONE transaction (group commit). Each command is applied
-- in its own sub-block: a version conflict, a taken unique key, a full slot pool or a
-- duplicate command id rolls back that command only and is reported in its result.
-- Input: jsonb array of {command_id, command_type, payload_hash, events[], claims[],
-- releases[], slot_acquire, slot_release, reply}. Output: jsonb array, one result each:
-- {status: ok|duplicate|conflict|unique_taken|slot_full, …}.
CREATE FUNCTION flexcore_append(batch jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    req       jsonb;
    c         jsonb;
    results   jsonb := '[]'::jsonb;
    outcome   jsonb;
    positions jsonb;
    stored    jsonb;
    found_log record;
    key_owner uuid;
    in_use    bigint;
    cname     text;
    any_ok    boolean := false;
BEGIN
    FOR req IN SELECT value FROM jsonb_array_elements(batch) LOOP
        outcome := NULL;
        BEGIN
            IF req->>'command_id' IS NOT NULL THEN
                SELECT reply, command_type, payload_hash INTO found_log
                  FROM command_log WHERE command_id = (req->>'command_id')::uuid;
                IF FOUND THEN
                    results := results || jsonb_build_array(jsonb_build_object(
                        'status', 'duplicate', 'reply', found_log.reply,
                        'command_type', found_log.command_type, 'payload_hash', found_log.payload_hash));
                    CONTINUE;
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
                       e->'data', e->'metadata'
                  FROM jsonb_array_elements(req->'events') WITH ORDINALITY AS t(e, n)
                 ORDER BY n
                RETURNING global_position
            )
            SELECT jsonb_agg(global_position ORDER BY global_position) INTO positions FROM ins;

            stored := coalesce(req->'reply', '{}'::jsonb)
                      || jsonb_build_object('global_position', positions->-1);
            IF req->>'command_id' IS NOT NULL THEN
                INSERT INTO command_log (command_id, command_type, payload_hash, reply)
                VALUES ((req->>'command_id')::uuid, req->>'command_type', req->>'payload_hash', stored);
            END IF;
            results := results || jsonb_build_array(jsonb_build_object(
                'status', 'ok', 'positions', positions, 'reply', stored));
            any_ok := true;
        EXCEPTION
            WHEN unique_violation THEN
                GET STACKED DIAGNOSTICS cname = CONSTRAINT_NAME;
                IF cname = 'command_log_pkey' THEN
                    -- The same command id committed concurrently: answer with its reply.
                    SELECT reply, command_type, payload_hash INTO found_log
                      FROM command_log WHERE command_id = (req->>'command_id')::uuid;
                    results := results || jsonb_build_array(jsonb_build_object(
                        'status', 'duplicate', 'reply', found_log.reply,
                        'command_type', found_log.command_type, 'payload_hash', found_log.payload_hash));
                ELSE
                    results := results || jsonb_build_array(jsonb_build_object(
                        'status', 'conflict', 'constraint', cname));
                END IF;
            WHEN SQLSTATE 'FC001' THEN
                results := results || jsonb_build_array(outcome);
        END;
    END LOOP;
    IF any_ok THEN
        -- A wake-up hint for the relay: at most one per transaction.
        PERFORM pg_notify('flexcore_events', '');
    END IF;
    RETURN results;
END
$$;
