-- Grants an event made (a paid invoice's included credits) name what made them, once per
-- account.
ALTER TABLE credit_grants ADD COLUMN origin TEXT;
CREATE UNIQUE INDEX credit_grants_origin_idx ON credit_grants (account_id, origin);
