DROP TABLE credit_reservations;
DROP TABLE usage_hours;
DROP TABLE usage_records;
DELETE FROM credit_entries WHERE kind NOT IN ('grant', 'spend') OR amount = 0;
ALTER TABLE credit_entries DROP CONSTRAINT credit_entries_kind_check;
ALTER TABLE credit_entries DROP CONSTRAINT credit_entries_amount_check;
ALTER TABLE credit_entries ADD CONSTRAINT credit_entries_kind_check
    CHECK (kind IN ('grant', 'spend'));
ALTER TABLE credit_entries ADD CONSTRAINT credit_entries_amount_check CHECK (amount > 0);
