-- Signing keys, publisher keys and policy versions.

-- Per-account RSA keys that sign bundles. The private JWK is sealed (AES-256-GCM); the id
-- of the AES key that sealed it is kept beside it so the AES key can be rotated.
CREATE TABLE signing_keys (
    kid            text        PRIMARY KEY,
    account_id     uuid        NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    public_n       text        NOT NULL,
    public_e       text        NOT NULL,
    aes_key_id     text        NOT NULL,
    sealed_private bytea       NOT NULL,
    created_at     timestamptz NOT NULL,
    retired_at     timestamptz
);

CREATE UNIQUE INDEX signing_keys_one_active_key ON signing_keys (account_id) WHERE retired_at IS NULL;
CREATE INDEX signing_keys_account_created_idx ON signing_keys (account_id, created_at DESC);
CREATE INDEX signing_keys_aes_key_idx ON signing_keys (aes_key_id);

-- Ed25519 keys whose signatures authorise publishing. The id is derived from the key.
CREATE TABLE publisher_keys (
    account_id  uuid        NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    key_id      text        NOT NULL,
    public_key  bytea       NOT NULL CHECK (octet_length(public_key) = 32),
    created_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    uploaded_by text        NOT NULL,
    token_id    uuid,
    user_id     uuid,
    PRIMARY KEY (account_id, key_id)
);

-- Every draft and version of every app. Published rows are never edited in place.
CREATE TABLE policies (
    id               uuid        PRIMARY KEY,
    account_id       uuid        NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    app_name         text        NOT NULL,
    version          bigint      NOT NULL CHECK (version > 0),
    stage            text        NOT NULL CHECK (stage IN ('draft', 'published')),
    active           boolean     NOT NULL DEFAULT false,
    document         jsonb       NOT NULL,
    jws              text,
    etag             text        NOT NULL,
    kid              text,
    tool_count       integer     NOT NULL,
    size_bytes       bigint      NOT NULL,
    description      text,
    created_at       timestamptz NOT NULL,
    published_at     timestamptz,
    expires_at       timestamptz,
    revoked_at       timestamptz,
    actor            text        NOT NULL,
    token_id         uuid,
    user_id          uuid,
    publisher_key_id text,
    rotation_id      text,
    UNIQUE (account_id, app_name, version),
    CHECK (stage = 'published' OR (jws IS NULL AND NOT active)),
    CHECK (stage = 'draft' OR jws IS NOT NULL)
);

CREATE UNIQUE INDEX policies_one_active_version ON policies (account_id, app_name) WHERE active;
CREATE UNIQUE INDEX policies_one_draft ON policies (account_id, app_name) WHERE stage = 'draft';
CREATE INDEX policies_account_created_idx ON policies (account_id, created_at DESC, id DESC);
