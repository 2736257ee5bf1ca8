-- Subscriptions reported by the payment provider's signed webhooks: the customers linked
-- to accounts, each account's subscription as of the newest event about it, and every
-- event received (each processed once). Their lapse or end locks an account.
ALTER TABLE accounts DROP CONSTRAINT accounts_lock_reason_check;
ALTER TABLE accounts ADD CONSTRAINT accounts_lock_reason_check
    CHECK (lock_reason IN ('trial_ended', 'payment_lapsed', 'subscription_ended'));

CREATE TABLE billing_customers (
    customer_id text        PRIMARY KEY CHECK (length(customer_id) BETWEEN 1 AND 255),
    account_id  uuid        NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL
);
CREATE INDEX billing_customers_account_idx ON billing_customers (account_id);

CREATE TABLE billing_subscriptions (
    account_id           uuid        PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
    subscription_id      text        NOT NULL CHECK (length(subscription_id) BETWEEN 1 AND 255),
    customer_id          text        NOT NULL CHECK (length(customer_id) BETWEEN 1 AND 255),
    plan                 text        NOT NULL CHECK (plan IN ('trial', 'essentials', 'pro', 'enterprise')),
    status               text        NOT NULL CHECK (status IN ('trialing', 'active', 'past_due',
        'incomplete', 'incomplete_expired', 'unpaid', 'paused', 'canceled')),
    current_period_start timestamptz,
    current_period_end   timestamptz,
    cancel_at_period_end boolean     NOT NULL,
    canceled_at          timestamptz,
    ended_at             timestamptz,
    event_id             text        NOT NULL,
    event_created_at     timestamptz NOT NULL,
    updated_at           timestamptz NOT NULL
);

CREATE TABLE billing_events (
    event_id         text        PRIMARY KEY CHECK (length(event_id) BETWEEN 1 AND 255),
    event_type       text        NOT NULL,
    event_created_at timestamptz NOT NULL,
    received_at      timestamptz NOT NULL,
    account_id       uuid        REFERENCES accounts (id) ON DELETE SET NULL,
    outcome          text        NOT NULL CHECK (outcome IN ('applied', 'unchanged', 'stale', 'ignored')),
    reason           text
);
CREATE INDEX billing_events_account_idx ON billing_events (account_id, received_at);
