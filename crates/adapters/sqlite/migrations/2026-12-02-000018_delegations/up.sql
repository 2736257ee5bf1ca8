-- Delegation grants (as the PostgreSQL migration 2026-12-02-000022).
CREATE TABLE delegations (
    id                   text    PRIMARY KEY NOT NULL,
    account_id           text    NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    grantor_principal_id text    REFERENCES principals (id) ON DELETE CASCADE,
    grantor_agent_id     text    REFERENCES agents (id) ON DELETE CASCADE,
    agent_id             text    NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    scopes               text    NOT NULL CHECK (json_type(scopes) = 'array'),
    tools                text    CHECK (json_type(tools) = 'array'),
    resources            text    NOT NULL CHECK (json_type(resources) = 'array'),
    task_id              text,
    max_depth            integer NOT NULL CHECK (max_depth BETWEEN 1 AND 10),
    created_at           text    NOT NULL,
    expires_at           text    NOT NULL,
    created_by           text    NOT NULL,
    revoked_at           text,
    revoked_reason       text,
    revoked_by           text,
    CHECK ((grantor_principal_id IS NULL) <> (grantor_agent_id IS NULL))
);
CREATE INDEX delegations_account_created_idx ON delegations (account_id, created_at DESC, id DESC);
CREATE INDEX delegations_agent_idx ON delegations (agent_id);
CREATE INDEX delegations_grantor_principal_idx ON delegations (grantor_principal_id)
    WHERE grantor_principal_id IS NOT NULL;
CREATE INDEX delegations_grantor_agent_idx ON delegations (grantor_agent_id)
    WHERE grantor_agent_id IS NOT NULL;
