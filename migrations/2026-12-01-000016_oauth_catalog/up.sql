-- The OAuth catalog of each account (seed 003): its tools, its scopes, and the tools bound
-- to its agents. Every write takes the account's catalog lock (an advisory lock), so the
-- checks made before it (names, implied scopes, cycles) hold when it commits.
CREATE TABLE tools (
    id              uuid        PRIMARY KEY,
    account_id      uuid        NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name            text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    description     text,
    category        text,
    parameters      jsonb       NOT NULL,
    required_scopes jsonb       NOT NULL,
    active          boolean     NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    UNIQUE (account_id, name)
);
-- An account's tools, newest first.
CREATE INDEX tools_account_created_idx ON tools (account_id, created_at DESC, id DESC);

-- The accounts whose scope catalog was seeded with the default scopes: once, even if every
-- scope is deleted later.
CREATE TABLE oauth_catalogs (
    account_id uuid        PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
    seeded_at  timestamptz NOT NULL
);

CREATE TABLE oauth_scopes (
    account_id  uuid        NOT NULL REFERENCES oauth_catalogs (account_id) ON DELETE CASCADE,
    name        text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 128),
    description text,
    category    text,
    implies     jsonb       NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (account_id, name)
);

-- A binding names an agent and a tool of its own account (the store checks both under the
-- catalog lock); deleting either deletes it.
CREATE TABLE agent_tools (
    account_id uuid        NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    agent_id   uuid        NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    tool_id    uuid        NOT NULL REFERENCES tools (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (agent_id, tool_id)
);
-- The cascade from a deleted tool.
CREATE INDEX agent_tools_tool_idx ON agent_tools (tool_id);
