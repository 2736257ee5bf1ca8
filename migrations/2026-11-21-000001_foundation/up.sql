-- Tenants, their users, API tokens and the audit trail.

CREATE TABLE accounts (
    id               uuid        PRIMARY KEY,
    name             text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    plan             text        NOT NULL CHECK (plan IN ('trial', 'essentials', 'pro', 'enterprise', 'locked')),
    trial_expires_at timestamptz,
    metrics_enabled  boolean     NOT NULL DEFAULT true,
    -- Per-event-type sampling rates set for this account: {"authz_decision": 0.5, ...}.
    event_sample     jsonb       NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(event_sample) = 'object'),
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL
);

CREATE TABLE users (
    id           uuid        PRIMARY KEY,
    account_id   uuid        NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    email        text,
    display_name text,
    full_name    text,
    role         text        NOT NULL CHECK (role IN ('owner', 'dev', 'member')),
    created_at   timestamptz NOT NULL
);

CREATE INDEX users_account_created_idx ON users (account_id, created_at, id);
CREATE UNIQUE INDEX users_account_email_key ON users (account_id, lower(email)) WHERE email IS NOT NULL;

CREATE TABLE api_tokens (
    id          uuid        PRIMARY KEY,
    account_id  uuid        NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    -- HMAC-SHA256(pepper, token). The token itself is never stored.
    digest      bytea       NOT NULL UNIQUE CHECK (octet_length(digest) = 32),
    kind        text        NOT NULL CHECK (kind IN ('dev', 'server', 'admin', 'custom')),
    -- Granted scopes and composites, separated by spaces: "dev", "server", "policy.read metrics.read".
    scopes      text        NOT NULL,
    name        text,
    app_name    text,
    created_by  uuid        REFERENCES users (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz,
    revoked_at  timestamptz,
    replaced_by uuid        REFERENCES api_tokens (id)
);

CREATE INDEX api_tokens_account_created_idx ON api_tokens (account_id, created_at DESC, id DESC);

-- The audit trail outlives what it describes, so it has no foreign keys.
CREATE TABLE audit_logs (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id    uuid        NOT NULL,
    actor         text        NOT NULL,
    token_id      uuid,
    user_id       uuid,
    action        text        NOT NULL,
    status        text        NOT NULL,
    resource_type text,
    resource_id   text,
    metadata      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at    timestamptz NOT NULL
);

CREATE INDEX audit_logs_account_created_idx ON audit_logs (account_id, created_at DESC, id DESC);
CREATE INDEX audit_logs_account_action_idx ON audit_logs (account_id, action, created_at DESC, id DESC);
