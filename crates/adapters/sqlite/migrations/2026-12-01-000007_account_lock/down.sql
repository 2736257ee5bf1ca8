CREATE INDEX accounts_trial_expiry_idx ON accounts (trial_expires_at) WHERE plan = 'trial';
DROP INDEX accounts_unlocked_trial_expiry_idx;
DROP TRIGGER accounts_state_update_check;
DROP TRIGGER accounts_state_insert_check;

-- Only the end of a trial locks an account in this release, and the previous one stored
-- that lock as the plan 'locked'.
UPDATE accounts SET plan = 'locked' WHERE locked_at IS NOT NULL;
ALTER TABLE accounts DROP COLUMN lock_reason;
ALTER TABLE accounts DROP COLUMN locked_at;
