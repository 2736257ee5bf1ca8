-- Tokens under delegation: the principal the token acts for, the grant its agent acts
-- under (the chain's last), the chain of acting agents with their grants (a JSON array,
-- the first hop first; empty for an agent acting for itself) and the one agent that may
-- exchange it next (RFC 8693 `may_act`). Revoking a grant or deactivating a principal
-- reaches its tokens through the indexes; deleting either deletes them.
ALTER TABLE oauth_tokens
    ADD COLUMN principal_id  uuid  REFERENCES principals (id) ON DELETE CASCADE,
    ADD COLUMN delegation_id uuid  REFERENCES delegations (id) ON DELETE CASCADE,
    ADD COLUMN chain         jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(chain) = 'array'),
    ADD COLUMN may_act       uuid;
CREATE INDEX oauth_tokens_principal_idx ON oauth_tokens (principal_id) WHERE principal_id IS NOT NULL;
CREATE INDEX oauth_tokens_delegation_idx ON oauth_tokens (delegation_id) WHERE delegation_id IS NOT NULL;
-- The signed revocation list reads the account's revoked tokens and grants not yet expired.
CREATE INDEX oauth_tokens_revoked_idx ON oauth_tokens (account_id, expires_at) WHERE revoked_at IS NOT NULL;
CREATE INDEX delegations_revoked_idx ON delegations (account_id, expires_at) WHERE revoked_at IS NOT NULL;
