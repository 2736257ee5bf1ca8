-- Agents: OAuth clients of their account (as the PostgreSQL migration 2026-12-01-000015).
CREATE TABLE agents (
    id                      text    PRIMARY KEY NOT NULL,
    account_id              text    NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name                    text    NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    description             text,
    scopes                  text    NOT NULL,
    redirect_uris           text    NOT NULL,
    resources               text    NOT NULL,
    attributes              text    NOT NULL,
    auth_method             text    NOT NULL
        CHECK (auth_method IN ('client_secret_basic', 'client_secret_post', 'private_key_jwt')),
    jwks                    text,
    jwks_uri                text,
    access_token_seconds    integer NOT NULL CHECK (access_token_seconds > 0),
    refresh_token_seconds   integer CHECK (refresh_token_seconds > 0),
    state                   text    NOT NULL CHECK (state IN ('pending', 'active', 'disabled')),
    registered_by           text    REFERENCES users (id) ON DELETE SET NULL,
    registration_digest     blob    UNIQUE CHECK (length(registration_digest) = 32),
    registration_expires_at text,
    secret_digest           blob    CHECK (length(secret_digest) = 32),
    previous_secret_digest  blob    CHECK (length(previous_secret_digest) = 32),
    previous_secret_until   text,
    created_at              text    NOT NULL,
    updated_at              text    NOT NULL,
    activated_at            text
);
CREATE INDEX agents_account_created_idx ON agents (account_id, created_at DESC, id DESC);
