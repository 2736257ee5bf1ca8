-- Tokens under delegation (as the PostgreSQL migration 2026-12-02-000023).
ALTER TABLE oauth_tokens ADD COLUMN principal_id text REFERENCES principals (id) ON DELETE CASCADE;
ALTER TABLE oauth_tokens ADD COLUMN delegation_id text REFERENCES delegations (id) ON DELETE CASCADE;
ALTER TABLE oauth_tokens ADD COLUMN chain text NOT NULL DEFAULT '[]' CHECK (json_type(chain) = 'array');
ALTER TABLE oauth_tokens ADD COLUMN may_act text;
CREATE INDEX oauth_tokens_principal_idx ON oauth_tokens (principal_id) WHERE principal_id IS NOT NULL;
CREATE INDEX oauth_tokens_delegation_idx ON oauth_tokens (delegation_id) WHERE delegation_id IS NOT NULL;
-- The signed revocation list reads the account's revoked tokens and grants not yet expired.
CREATE INDEX oauth_tokens_revoked_idx ON oauth_tokens (account_id, expires_at) WHERE revoked_at IS NOT NULL;
CREATE INDEX delegations_revoked_idx ON delegations (account_id, expires_at) WHERE revoked_at IS NOT NULL;
