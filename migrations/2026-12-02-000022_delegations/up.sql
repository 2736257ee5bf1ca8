-- Delegation grants (seed 003): a principal, or an agent, lets an agent act for it with a
-- subset of what it holds. Exactly one grantor column is set; deleting the grantor or the
-- agent deletes the grant. `scopes`, `tools` (null: any the scopes allow) and `resources`
-- are JSON arrays of texts. A grant never changes once made, except by its revocation.
CREATE TABLE delegations (
    id                   uuid        PRIMARY KEY,
    account_id           uuid        NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    grantor_principal_id uuid        REFERENCES principals (id) ON DELETE CASCADE,
    grantor_agent_id     uuid        REFERENCES agents (id) ON DELETE CASCADE,
    agent_id             uuid        NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    scopes               jsonb       NOT NULL CHECK (jsonb_typeof(scopes) = 'array'),
    tools                jsonb       CHECK (jsonb_typeof(tools) = 'array'),
    resources            jsonb       NOT NULL CHECK (jsonb_typeof(resources) = 'array'),
    task_id              text,
    max_depth            integer     NOT NULL CHECK (max_depth BETWEEN 1 AND 10),
    created_at           timestamptz NOT NULL,
    expires_at           timestamptz NOT NULL,
    created_by           text        NOT NULL,
    revoked_at           timestamptz,
    revoked_reason       text,
    revoked_by           text,
    CONSTRAINT delegations_one_grantor
        CHECK ((grantor_principal_id IS NULL) <> (grantor_agent_id IS NULL))
);
-- An account's grants, newest first; those of a grantor or to an agent (and the foreign
-- keys' cascades).
CREATE INDEX delegations_account_created_idx ON delegations (account_id, created_at DESC, id DESC);
CREATE INDEX delegations_agent_idx ON delegations (agent_id);
CREATE INDEX delegations_grantor_principal_idx ON delegations (grantor_principal_id)
    WHERE grantor_principal_id IS NOT NULL;
CREATE INDEX delegations_grantor_agent_idx ON delegations (grantor_agent_id)
    WHERE grantor_agent_id IS NOT NULL;
