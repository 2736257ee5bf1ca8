-- An event's identity, led by the occurrence time: new keys land at the index's recent edge,
-- where a digest-first key scattered every insert over the whole index. The same index serves
-- the analytics windows, so the separate (account_id, occurred_at) index goes.
CREATE UNIQUE INDEX events_identity ON events (account_id, occurred_at, event_key);
ALTER TABLE events DROP CONSTRAINT events_account_id_event_key_key;
DROP INDEX events_account_occurred_idx;
