CREATE INDEX accounts_trial_expiry_idx ON accounts (trial_expires_at) WHERE plan = 'trial';
DROP INDEX accounts_unlocked_trial_expiry_idx;

-- Only the end of a trial locks an account in this release, and the previous one stored
-- that lock as the plan 'locked'.
ALTER TABLE accounts
    DROP CONSTRAINT accounts_plan_check,
    ADD CONSTRAINT accounts_plan_check
        CHECK (plan IN ('trial', 'essentials', 'pro', 'enterprise', 'locked'));
UPDATE accounts SET plan = 'locked' WHERE locked_at IS NOT NULL;

ALTER TABLE accounts
    DROP CONSTRAINT accounts_lock_check,
    DROP COLUMN lock_reason,
    DROP COLUMN locked_at;
