-- Agents: OAuth clients of their account (seed 003). The registration token and the client
-- secrets are kept as keyed digests only; the previous secret works until
-- `previous_secret_until` (a rotation's grace).
CREATE TABLE agents (
    id                      uuid        PRIMARY KEY,
    account_id              uuid        NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name                    text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    description             text,
    scopes                  jsonb       NOT NULL,
    redirect_uris           jsonb       NOT NULL,
    -- RFC 8707 resources the agent's tokens may target (their `aud`).
    resources               jsonb       NOT NULL,
    -- What access rules read about the agent (a JSON object).
    attributes              jsonb       NOT NULL,
    auth_method             text        NOT NULL
        CHECK (auth_method IN ('client_secret_basic', 'client_secret_post', 'private_key_jwt')),
    jwks                    jsonb,
    jwks_uri                text,
    access_token_seconds    integer     NOT NULL CHECK (access_token_seconds > 0),
    refresh_token_seconds   integer     CHECK (refresh_token_seconds > 0),
    state                   text        NOT NULL CHECK (state IN ('pending', 'active', 'disabled')),
    registered_by           uuid        REFERENCES users (id) ON DELETE SET NULL,
    registration_digest     bytea       UNIQUE CHECK (length(registration_digest) = 32),
    registration_expires_at timestamptz,
    secret_digest           bytea       CHECK (length(secret_digest) = 32),
    previous_secret_digest  bytea       CHECK (length(previous_secret_digest) = 32),
    previous_secret_until   timestamptz,
    created_at              timestamptz NOT NULL,
    updated_at              timestamptz NOT NULL,
    activated_at            timestamptz
);
-- An account's agents, newest first.
CREATE INDEX agents_account_created_idx ON agents (account_id, created_at DESC, id DESC);
