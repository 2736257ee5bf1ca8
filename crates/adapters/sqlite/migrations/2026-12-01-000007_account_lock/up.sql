-- Locked is a state of an account, not a plan (as the PostgreSQL migration
-- 2026-12-01-000011): a locked account keeps its plan, and its lock says since when and
-- why. Billing adds 'payment_lapsed' to the reasons.
ALTER TABLE accounts ADD COLUMN locked_at text;
ALTER TABLE accounts ADD COLUMN lock_reason text CHECK (lock_reason IN ('trial_ended'));

-- The trial locker stored 'locked' as the plan of an expired trial, and locked nothing else:
-- those accounts are trials again, locked since their trial's end (without one, since their
-- last change).
UPDATE accounts
    SET plan = 'trial',
        locked_at = coalesce(trial_expires_at, updated_at),
        lock_reason = 'trial_ended'
    WHERE plan = 'locked';

-- SQLite changes a table's checks only by rebuilding it (and every table referring to it),
-- so triggers hold what PostgreSQL's checks do: 'locked' is no plan any more (a process of
-- the previous release on the same file would store it again, and lock and audit the
-- accounts converted above a second time: its trial locker fails here instead, writing
-- nothing), and a lock has both its time and its reason or neither.
CREATE TRIGGER accounts_state_insert_check BEFORE INSERT ON accounts
    WHEN NEW.plan = 'locked' OR (NEW.locked_at IS NULL) <> (NEW.lock_reason IS NULL)
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: accounts_state_check');
END;
CREATE TRIGGER accounts_state_update_check BEFORE UPDATE OF plan, locked_at, lock_reason ON accounts
    WHEN NEW.plan = 'locked' OR (NEW.locked_at IS NULL) <> (NEW.lock_reason IS NULL)
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: accounts_state_check');
END;

-- What the trial locker looks for: trials not locked yet (a locked trial keeps its plan).
CREATE INDEX accounts_unlocked_trial_expiry_idx ON accounts (trial_expires_at)
    WHERE plan = 'trial' AND locked_at IS NULL;
DROP INDEX accounts_trial_expiry_idx;
