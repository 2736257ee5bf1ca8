-- The export walks events in the order they were committed, not by ingest time
-- (docs/architecture.md, "Export"). SQLite has one writer at a time and assigns the row id
-- (AUTOINCREMENT: never reused) inside the write transaction, so row ids are in commit
-- order and every committed row is final: an event's place in the stream is its id. The
-- column names it as PostgreSQL's does (there, the inserting transaction's id), computed,
-- not stored.
ALTER TABLE events ADD COLUMN stream_position bigint NOT NULL GENERATED ALWAYS AS (id) VIRTUAL;

-- A checkpoint names a place in the stream. An existing one, `(ingested_at, event_id)` in
-- the former order, becomes `(k, k)`: k is the id just below the smallest id of an event
-- it had not passed, so every event up to k was exported, and the events above k that it
-- had passed are exported again (the ClickHouse export counts an id once). Without events
-- after it, every stored event was exported. `ingested_at` stays: the export's lag gauge.
ALTER TABLE job_checkpoints ADD COLUMN stream_position bigint NOT NULL DEFAULT 0;
UPDATE job_checkpoints SET event_id = coalesce(
    (SELECT min(e.id) - 1 FROM events AS e
        WHERE (e.ingested_at, e.id) > (job_checkpoints.ingested_at, job_checkpoints.event_id)),
    (SELECT max(e.id) FROM events AS e),
    event_id
);
UPDATE job_checkpoints SET stream_position = event_id;

-- The stream's order replaces the former one (which served the update above).
CREATE INDEX events_stream_idx ON events (stream_position, id);
DROP INDEX events_ingested_idx;
