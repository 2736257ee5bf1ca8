CREATE INDEX events_account_occurred_idx ON events (account_id, occurred_at);
ALTER TABLE events ADD CONSTRAINT events_account_id_event_key_key UNIQUE (account_id, event_key);
DROP INDEX events_identity;
