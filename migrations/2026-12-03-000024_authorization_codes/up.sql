-- Authorization codes (RFC 6749 §4.1 with PKCE): stored by the keyed digest of their text,
-- bound to their agent, redirect URI and PKCE challenge, and to the delegation grant the
-- person's approval made or found. A code is spent once: `spent_at` and the family of the
-- tokens it brought are set in the transaction that stores those tokens, so a second use
-- finds the family to revoke. Deleting the agent, the principal or the grant deletes it.
CREATE TABLE authorization_codes (
    digest         bytea       PRIMARY KEY,
    account_id     uuid        NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    agent_id       uuid        NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    principal_id   uuid        NOT NULL REFERENCES principals (id) ON DELETE CASCADE,
    delegation_id  uuid        NOT NULL REFERENCES delegations (id) ON DELETE CASCADE,
    redirect_uri   text        NOT NULL,
    code_challenge text        NOT NULL,
    scopes         jsonb       NOT NULL CHECK (jsonb_typeof(scopes) = 'array'),
    openid         boolean     NOT NULL,
    resources      jsonb       NOT NULL CHECK (jsonb_typeof(resources) = 'array'),
    nonce          text,
    auth_time      timestamptz NOT NULL,
    created_at     timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL,
    spent_at       timestamptz,
    family_id      uuid
);
-- The pruning job's scan, and the foreign keys' cascades.
CREATE INDEX authorization_codes_expires_idx ON authorization_codes (expires_at);
CREATE INDEX authorization_codes_agent_idx ON authorization_codes (agent_id);
CREATE INDEX authorization_codes_principal_idx ON authorization_codes (principal_id);
CREATE INDEX authorization_codes_delegation_idx ON authorization_codes (delegation_id);
