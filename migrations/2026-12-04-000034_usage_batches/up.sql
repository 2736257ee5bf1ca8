-- A batch of usage reports is paid by one ledger entry, which each of its records names
-- (`entry_id`); a record has an id of its own, and its idempotency key is unique among its
-- account's records, so concurrent batches sharing a key store it once. The records
-- written before this migration were paid one entry each, under their own ids.
--
-- `entry_id` has no foreign key: a record and its entry are written by one transaction,
-- and a key checked per record would cost a lookup per report on the busiest write path.
ALTER TABLE usage_records DROP CONSTRAINT usage_records_id_fkey;
ALTER TABLE usage_records ADD COLUMN entry_id uuid;
UPDATE usage_records SET entry_id = id;
ALTER TABLE usage_records ALTER COLUMN entry_id SET NOT NULL;
CREATE UNIQUE INDEX usage_records_key_idx ON usage_records (account_id, idempotency_key);
