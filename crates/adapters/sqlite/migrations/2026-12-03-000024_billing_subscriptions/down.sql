PRAGMA foreign_keys = OFF;
BEGIN;

DROP TABLE billing_events;
DROP TABLE billing_subscriptions;
DROP TABLE billing_customers;
UPDATE accounts SET locked_at = NULL, lock_reason = NULL
    WHERE lock_reason IN ('payment_lapsed', 'subscription_ended');
CREATE TABLE accounts_rebuilt (
    id               text    PRIMARY KEY NOT NULL,
    name             text    NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    plan             text    NOT NULL CHECK (plan IN ('trial', 'essentials', 'pro', 'enterprise', 'locked')),
    trial_expires_at text   ,
    metrics_enabled  boolean NOT NULL DEFAULT 1,
    event_sample     text    NOT NULL DEFAULT '{}' CHECK (json_type(event_sample) = 'object'),
    created_at       text    NOT NULL,
    updated_at       text    NOT NULL,
    require_publisher_key_approval boolean NOT NULL DEFAULT 0,
    locked_at        text,
    lock_reason      text    CHECK (lock_reason IN ('trial_ended'))
);
INSERT INTO accounts_rebuilt (id, name, plan, trial_expires_at, metrics_enabled, event_sample,
        created_at, updated_at, require_publisher_key_approval, locked_at, lock_reason)
    SELECT id, name, plan, trial_expires_at, metrics_enabled, event_sample,
        created_at, updated_at, require_publisher_key_approval, locked_at, lock_reason
    FROM accounts;
DROP TABLE accounts;
ALTER TABLE accounts_rebuilt RENAME TO accounts;

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
CREATE INDEX accounts_unlocked_trial_expiry_idx ON accounts (trial_expires_at)
    WHERE plan = 'trial' AND locked_at IS NULL;

COMMIT;
PRAGMA foreign_keys = ON;
