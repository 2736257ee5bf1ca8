-- The export walks events in the order their positions become final, not by ingest time
-- (docs/architecture.md, "Export"). An event's position is the id of the transaction that
-- inserted it, set by the column default so that every insert path sets it; the export
-- reads only positions below the oldest transaction still running, which no transaction can
-- write any more. xid8 values are epoch-extended (they never wrap) and far below 2^63, so
-- they are kept as bigint, the type both stores share.
--
-- Events stored before this migration get position 0: before every transaction's (real
-- transaction ids start at 3), in id order. Adding the column with a constant default
-- rewrites nothing; the default for new rows is set after.
ALTER TABLE events ADD COLUMN stream_position bigint NOT NULL DEFAULT 0;
ALTER TABLE events ALTER COLUMN stream_position SET DEFAULT pg_current_xact_id()::text::bigint;

-- A checkpoint names a place in the stream. An existing one, `(ingested_at, event_id)` in
-- the former order, becomes `(0, k)`: k is the id just below the smallest id of an event
-- it had not passed, so every event up to k was exported, and the events above k that it
-- had passed are exported again (the ClickHouse export counts an id once). Without events
-- after it, every stored event was exported. `ingested_at` stays: the export's lag gauge.
ALTER TABLE job_checkpoints ADD COLUMN stream_position bigint NOT NULL DEFAULT 0;
UPDATE job_checkpoints AS c SET event_id = coalesce(
    (SELECT min(e.id) - 1 FROM events AS e WHERE (e.ingested_at, e.id) > (c.ingested_at, c.event_id)),
    (SELECT max(e.id) FROM events AS e),
    c.event_id
);

-- The stream's order replaces the former one (which served the update above).
CREATE INDEX events_stream_idx ON events (stream_position, id);
DROP INDEX events_ingested_idx;
