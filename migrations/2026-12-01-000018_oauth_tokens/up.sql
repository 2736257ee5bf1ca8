-- Tokens the account's authorization server issued to its agents, with their lineage. An
-- access token's row keeps the keyed digest of its JWT, a refresh token's the digest of its
-- secret. A spent refresh token keeps when it was spent and the answer it got, sealed with
-- a key only its holder can derive, for a retry within the grace.
CREATE TABLE oauth_tokens (
    id              uuid        PRIMARY KEY,
    account_id      uuid        NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    agent_id        uuid        NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    kind            text        NOT NULL CHECK (kind IN ('access', 'refresh')),
    family_id       uuid        NOT NULL,
    parent_id       uuid,
    subject         text        NOT NULL,
    scopes          jsonb       NOT NULL,
    audience        jsonb       NOT NULL,
    task_id         text        NOT NULL,
    parent_task_id  text,
    grant_type      text        NOT NULL,
    digest          bytea       NOT NULL CHECK (length(digest) = 32),
    issued_at       timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,
    revoked_at      timestamptz,
    revoked_reason  text,
    spent_at        timestamptz,
    sealed_answer   bytea
);
-- The account's tokens, newest first.
CREATE INDEX oauth_tokens_account_issued_idx ON oauth_tokens (account_id, issued_at DESC, id DESC);
-- A refresh token is found by its digest.
CREATE UNIQUE INDEX oauth_tokens_refresh_digest_idx ON oauth_tokens (digest) WHERE kind = 'refresh';
-- Revocations reach a family, or a token's descendants.
CREATE INDEX oauth_tokens_family_idx ON oauth_tokens (family_id);
CREATE INDEX oauth_tokens_parent_idx ON oauth_tokens (parent_id) WHERE parent_id IS NOT NULL;
-- Deleting an agent deletes its tokens.
CREATE INDEX oauth_tokens_agent_idx ON oauth_tokens (agent_id);
