-- Authorization codes (as the PostgreSQL migration 2026-12-03-000024).
CREATE TABLE authorization_codes (
    digest         blob    PRIMARY KEY NOT NULL,
    account_id     text    NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    agent_id       text    NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    principal_id   text    NOT NULL REFERENCES principals (id) ON DELETE CASCADE,
    delegation_id  text    NOT NULL REFERENCES delegations (id) ON DELETE CASCADE,
    redirect_uri   text    NOT NULL,
    code_challenge text    NOT NULL,
    scopes         text    NOT NULL CHECK (json_type(scopes) = 'array'),
    openid         boolean NOT NULL,
    resources      text    NOT NULL CHECK (json_type(resources) = 'array'),
    nonce          text,
    auth_time      text    NOT NULL,
    created_at     text    NOT NULL,
    expires_at     text    NOT NULL,
    spent_at       text,
    family_id      text
);
CREATE INDEX authorization_codes_expires_idx ON authorization_codes (expires_at);
CREATE INDEX authorization_codes_agent_idx ON authorization_codes (agent_id);
CREATE INDEX authorization_codes_principal_idx ON authorization_codes (principal_id);
CREATE INDEX authorization_codes_delegation_idx ON authorization_codes (delegation_id);
