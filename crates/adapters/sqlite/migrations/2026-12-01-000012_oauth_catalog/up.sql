-- The OAuth catalog (as the PostgreSQL migration 2026-12-01-000016). Foreign keys are
-- enforced: every connection sets `PRAGMA foreign_keys = ON`.
CREATE TABLE tools (
    id              text    PRIMARY KEY NOT NULL,
    account_id      text    NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name            text    NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    description     text,
    category        text,
    parameters      text    NOT NULL,
    required_scopes text    NOT NULL,
    active          boolean NOT NULL,
    created_at      text    NOT NULL,
    updated_at      text    NOT NULL,
    UNIQUE (account_id, name)
);
CREATE INDEX tools_account_created_idx ON tools (account_id, created_at DESC, id DESC);

CREATE TABLE oauth_catalogs (
    account_id text PRIMARY KEY NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    seeded_at  text NOT NULL
);

CREATE TABLE oauth_scopes (
    account_id  text NOT NULL REFERENCES oauth_catalogs (account_id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
    description text,
    category    text,
    implies     text NOT NULL,
    created_at  text NOT NULL,
    updated_at  text NOT NULL,
    PRIMARY KEY (account_id, name)
);

CREATE TABLE agent_tools (
    account_id text NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    agent_id   text NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    tool_id    text NOT NULL REFERENCES tools (id) ON DELETE CASCADE,
    created_at text NOT NULL,
    PRIMARY KEY (agent_id, tool_id)
);
CREATE INDEX agent_tools_tool_idx ON agent_tools (tool_id);
