-- Locked is a state of an account, not a plan (docs/architecture.md, "Decisions"): a locked
-- account keeps its plan, and its lock says since when and why. Both columns are set or
-- neither. The reasons are those the domain knows (`LockReason`); billing adds
-- 'payment_lapsed' to this check when it locks unpaid accounts.
ALTER TABLE accounts
    ADD COLUMN locked_at   timestamptz,
    ADD COLUMN lock_reason text CHECK (lock_reason IN ('trial_ended')),
    ADD CONSTRAINT accounts_lock_check CHECK ((locked_at IS NULL) = (lock_reason IS NULL));

-- The trial locker stored 'locked' as the plan of an expired trial, and locked nothing else:
-- those accounts are trials again, locked since their trial's end (the lock the trial
-- locker now records; without an end, since their last change).
UPDATE accounts
    SET plan = 'trial',
        locked_at = coalesce(trial_expires_at, updated_at),
        lock_reason = 'trial_ended'
    WHERE plan = 'locked';

-- 'locked' is no plan any more. A worker of the previous release, still running while the
-- release rolls out, would store it again on expired trials, those converted above
-- included, and audit a second lock of each: its trial locker fails on this check instead,
-- writing nothing, and the new worker records each lock once. (Its API replicas serve an
-- expired trial as locked either way.) Validating the check reads the accounts, a small
-- table.
ALTER TABLE accounts
    DROP CONSTRAINT accounts_plan_check,
    ADD CONSTRAINT accounts_plan_check CHECK (plan IN ('trial', 'essentials', 'pro', 'enterprise'));

-- What the trial locker looks for: trials not locked yet. A locked trial keeps its plan, so
-- the former index (every trial) would grow with every trial that ever ended.
CREATE INDEX accounts_unlocked_trial_expiry_idx ON accounts (trial_expires_at)
    WHERE plan = 'trial' AND locked_at IS NULL;
DROP INDEX accounts_trial_expiry_idx;
