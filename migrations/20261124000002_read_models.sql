-- Read models of the projection service live in schema `read`. Each projection's tables
-- exist per generation (`read.<table>_g<N>`); queries read the views `read.<table>`,
-- which a rebuild re-points to a new generation in one transaction (blue/green).
CREATE SCHEMA IF NOT EXISTS read;

-- One row per projection: the generation being served and its checkpoint in the log's
-- reading order (transaction_id, global_position), written in the same transaction as
-- every read-model update, so an event is applied exactly once.
CREATE TABLE read.projections (
    name            text PRIMARY KEY,
    generation      integer     NOT NULL,
    transaction_id  xid8        NOT NULL DEFAULT '0',
    global_position bigint      NOT NULL DEFAULT 0,
    events_applied  bigint      NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- The latest rebuild's request and progress (contracts::views::RebuildStatus).
    rebuild         jsonb
) WITH (
    -- Each projection's row is updated with every batch (thousands of times a second
    -- under load). Only non-indexed columns change, so with room on the page every
    -- update is HOT and pruned in place; without it the row's versions pile up faster
    -- than autovacuum removes them and every checkpoint update slows down.
    fillfactor = 10,
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 10000
);
