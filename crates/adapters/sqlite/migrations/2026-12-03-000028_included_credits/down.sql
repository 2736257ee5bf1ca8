DROP INDEX credit_grants_origin_idx;
ALTER TABLE credit_grants DROP COLUMN origin;
