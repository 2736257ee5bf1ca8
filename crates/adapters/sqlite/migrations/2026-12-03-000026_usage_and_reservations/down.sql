DROP TABLE credit_reservations;
DROP TABLE usage_hours;
DROP TABLE usage_records;
DELETE FROM credit_entries WHERE kind NOT IN ('grant', 'spend') OR amount = 0;
