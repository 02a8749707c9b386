-- The layout each projection's served tables were built with: a fingerprint of its table
-- specification (columns, indexes, side tables; TableSpec::layout in the projection
-- service). A service whose own layout differs rebuilds the projection at start-up
-- (blue/green, as `flexctl projection rebuild` does) and records its layout with the swap.
-- NULL: built before layouts were recorded; the service records its own once the tables
-- have everything it needs.
ALTER TABLE read.projections ADD COLUMN layout text;
