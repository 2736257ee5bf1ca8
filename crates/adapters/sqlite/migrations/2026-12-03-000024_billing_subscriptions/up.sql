-- Subscriptions reported by the payment provider (as the PostgreSQL migration
-- 2026-12-03-000028): the lock reasons they bring, the customers linked to accounts, each
-- account's subscription, and every event received.
--
-- SQLite changes a CHECK constraint only by rebuilding its table; with foreign keys on,
-- dropping the old `accounts` would first delete every row that references an account
-- (ON DELETE CASCADE). So they are off for the rebuild.
PRAGMA foreign_keys = OFF;
BEGIN;

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
    lock_reason      text    CHECK (lock_reason IN ('trial_ended', 'payment_lapsed', 'subscription_ended'))
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

CREATE TABLE billing_customers (
    customer_id text PRIMARY KEY NOT NULL CHECK (length(customer_id) BETWEEN 1 AND 255),
    account_id  text NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    created_at  text NOT NULL
);
CREATE INDEX billing_customers_account_idx ON billing_customers (account_id);

CREATE TABLE billing_subscriptions (
    account_id           text    PRIMARY KEY NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    subscription_id      text    NOT NULL CHECK (length(subscription_id) BETWEEN 1 AND 255),
    customer_id          text    NOT NULL CHECK (length(customer_id) BETWEEN 1 AND 255),
    plan                 text    NOT NULL CHECK (plan IN ('trial', 'essentials', 'pro', 'enterprise')),
    status               text    NOT NULL CHECK (status IN ('trialing', 'active', 'past_due',
        'incomplete', 'incomplete_expired', 'unpaid', 'paused', 'canceled')),
    current_period_start text,
    current_period_end   text,
    cancel_at_period_end boolean NOT NULL,
    canceled_at          text,
    ended_at             text,
    event_id             text    NOT NULL,
    event_created_at     text    NOT NULL,
    updated_at           text    NOT NULL
);

CREATE TABLE billing_events (
    event_id         text PRIMARY KEY NOT NULL CHECK (length(event_id) BETWEEN 1 AND 255),
    event_type       text NOT NULL,
    event_created_at text NOT NULL,
    received_at      text NOT NULL,
    account_id       text REFERENCES accounts (id) ON DELETE SET NULL,
    outcome          text NOT NULL CHECK (outcome IN ('applied', 'unchanged', 'stale', 'ignored')),
    reason           text
);
CREATE INDEX billing_events_account_idx ON billing_events (account_id, received_at);

COMMIT;
PRAGMA foreign_keys = ON;
