-- Records paid by a batch's entry have no entry of their own: they cannot be kept.
DROP INDEX usage_records_key_idx;
DELETE FROM usage_records WHERE id <> entry_id;
ALTER TABLE usage_records DROP COLUMN entry_id;
ALTER TABLE usage_records ADD CONSTRAINT usage_records_id_fkey
    FOREIGN KEY (id) REFERENCES credit_entries (id) ON DELETE CASCADE;
