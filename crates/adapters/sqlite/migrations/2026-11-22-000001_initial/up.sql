-- The whole D2 schema on SQLite, equivalent to the PostgreSQL migrations.
-- Types: uuids are their hyphenated text (ordered as PostgreSQL orders them); times are UTC
-- text, `YYYY-MM-DD HH:MM:SS[.ffffff]+00:00` (ordered as text as in time); JSON is text.

CREATE TABLE accounts (
    id               text    PRIMARY KEY NOT NULL,
    name             text    NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    plan             text    NOT NULL CHECK (plan IN ('trial', 'essentials', 'pro', 'enterprise', 'locked')),
    trial_expires_at text   ,
    metrics_enabled  boolean NOT NULL DEFAULT 1,
    event_sample     text    NOT NULL DEFAULT '{}' CHECK (json_type(event_sample) = 'object'),
    created_at       text    NOT NULL,
    updated_at       text    NOT NULL
);
CREATE INDEX accounts_trial_expiry_idx ON accounts (trial_expires_at) WHERE plan = 'trial';

CREATE TABLE users (
    id           text    PRIMARY KEY NOT NULL,
    account_id   text    NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    email        text,
    display_name text,
    full_name    text,
    role         text    NOT NULL CHECK (role IN ('owner', 'dev', 'member')),
    created_at   text    NOT NULL
);
CREATE INDEX users_account_created_idx ON users (account_id, created_at, id);
CREATE UNIQUE INDEX users_account_email_key ON users (account_id, lower(email)) WHERE email IS NOT NULL;

CREATE TABLE api_tokens (
    id          text    PRIMARY KEY NOT NULL,
    account_id  text    NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    -- HMAC-SHA256(pepper, token). The token itself is never stored.
    digest      blob    NOT NULL UNIQUE CHECK (length(digest) = 32),
    kind        text    NOT NULL CHECK (kind IN ('dev', 'server', 'admin', 'custom')),
    scopes      text    NOT NULL,
    name        text,
    app_name    text,
    created_by  text    REFERENCES users (id) ON DELETE SET NULL,
    created_at  text    NOT NULL,
    expires_at  text   ,
    revoked_at  text   ,
    replaced_by text    REFERENCES api_tokens (id)
);
CREATE INDEX api_tokens_account_created_idx ON api_tokens (account_id, created_at DESC, id DESC);
CREATE INDEX api_tokens_unrevoked_expiry_idx ON api_tokens (expires_at)
    WHERE revoked_at IS NULL AND expires_at IS NOT NULL;

-- The audit trail outlives what it describes, so it has no foreign keys.
CREATE TABLE audit_logs (
    id            integer PRIMARY KEY AUTOINCREMENT NOT NULL,
    account_id    text    NOT NULL,
    actor         text    NOT NULL,
    token_id      text,
    user_id       text,
    action        text    NOT NULL,
    status        text    NOT NULL,
    resource_type text,
    resource_id   text,
    metadata      text    NOT NULL DEFAULT '{}',
    created_at    text    NOT NULL
);
CREATE INDEX audit_logs_account_created_idx ON audit_logs (account_id, created_at DESC, id DESC);
CREATE INDEX audit_logs_account_action_idx ON audit_logs (account_id, action, created_at DESC, id DESC);

CREATE TABLE signing_keys (
    kid            text    PRIMARY KEY NOT NULL,
    account_id     text    NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    public_n       text    NOT NULL,
    public_e       text    NOT NULL,
    aes_key_id     text    NOT NULL,
    sealed_private blob    NOT NULL,
    created_at     text    NOT NULL,
    retired_at     text   
);
CREATE UNIQUE INDEX signing_keys_one_active_key ON signing_keys (account_id) WHERE retired_at IS NULL;
CREATE INDEX signing_keys_account_created_idx ON signing_keys (account_id, created_at DESC);
CREATE INDEX signing_keys_aes_key_idx ON signing_keys (aes_key_id);

CREATE TABLE publisher_keys (
    account_id  text    NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    key_id      text    NOT NULL,
    public_key  blob    NOT NULL CHECK (length(public_key) = 32),
    created_at  text    NOT NULL,
    revoked_at  text   ,
    uploaded_by text    NOT NULL,
    token_id    text,
    user_id     text,
    PRIMARY KEY (account_id, key_id)
);

CREATE TABLE policies (
    id               text    PRIMARY KEY NOT NULL,
    account_id       text    NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    app_name         text    NOT NULL,
    version          bigint  NOT NULL CHECK (version > 0),
    stage            text    NOT NULL CHECK (stage IN ('draft', 'published')),
    active           boolean NOT NULL DEFAULT 0,
    document         text    NOT NULL,
    jws              text,
    etag             text    NOT NULL,
    kid              text,
    tool_count       integer NOT NULL,
    size_bytes       bigint  NOT NULL,
    description      text,
    created_at       text    NOT NULL,
    published_at     text   ,
    expires_at       text   ,
    revoked_at       text   ,
    actor            text    NOT NULL,
    token_id         text,
    user_id          text,
    publisher_key_id text,
    rotation_id      text,
    UNIQUE (account_id, app_name, version),
    CHECK (stage = 'published' OR (jws IS NULL AND NOT active)),
    CHECK (stage = 'draft' OR jws IS NOT NULL)
);
CREATE UNIQUE INDEX policies_one_active_version ON policies (account_id, app_name) WHERE active;
CREATE UNIQUE INDEX policies_one_draft ON policies (account_id, app_name) WHERE stage = 'draft';
CREATE INDEX policies_account_created_idx ON policies (account_id, created_at DESC, id DESC);

CREATE TABLE events (
    id           integer PRIMARY KEY AUTOINCREMENT NOT NULL,
    account_id   text    NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    event_key    blob    NOT NULL CHECK (length(event_key) = 32),
    token_id     text,
    event_type   text    NOT NULL,
    occurred_at  text    NOT NULL,
    ingested_at  text    NOT NULL,
    app_name     text,
    service      text,
    host         text,
    source_ip    text,
    request_id   text,
    decision     smallint CHECK (decision IN (0, 1)),
    tool         text,
    latency_ms   double,
    payload      text    NOT NULL
);
CREATE UNIQUE INDEX events_identity ON events (account_id, occurred_at, event_key);
CREATE INDEX events_account_ingested_idx ON events (account_id, ingested_at DESC, id DESC);
CREATE INDEX events_ingested_idx ON events (ingested_at, id);

CREATE TABLE job_checkpoints (
    job          text    PRIMARY KEY NOT NULL,
    ingested_at  text    NOT NULL,
    event_id     bigint  NOT NULL,
    updated_at   text    NOT NULL
);

-- Which process runs a scheduled job (SQLite's stand-in for PostgreSQL's advisory locks):
-- a lease that expires, so a crashed holder does not block the job for ever.
CREATE TABLE job_locks (
    job         text    PRIMARY KEY NOT NULL,
    holder      text    NOT NULL,
    expires_at  text    NOT NULL
);

-- The change feed between processes on one database file (PostgreSQL uses NOTIFY): a
-- committed write appends what it changed; every process polls for rows after the last it
-- saw, and old rows are pruned.
CREATE TABLE changes (
    id          integer PRIMARY KEY AUTOINCREMENT NOT NULL,
    payload     text    NOT NULL,
    created_at  text    NOT NULL
);
