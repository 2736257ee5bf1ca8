-- Tokens issued to agents (as the PostgreSQL migration 2026-12-01-000018).
CREATE TABLE oauth_tokens (
    id              text    PRIMARY KEY NOT NULL,
    account_id      text    NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    agent_id        text    NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    kind            text    NOT NULL CHECK (kind IN ('access', 'refresh')),
    family_id       text    NOT NULL,
    parent_id       text,
    subject         text    NOT NULL,
    scopes          text    NOT NULL,
    audience        text    NOT NULL,
    task_id         text    NOT NULL,
    parent_task_id  text,
    grant_type      text    NOT NULL,
    digest          blob    NOT NULL CHECK (length(digest) = 32),
    issued_at       text    NOT NULL,
    expires_at      text    NOT NULL,
    revoked_at      text,
    revoked_reason  text,
    spent_at        text,
    sealed_answer   blob
);
CREATE INDEX oauth_tokens_account_issued_idx ON oauth_tokens (account_id, issued_at DESC, id DESC);
CREATE UNIQUE INDEX oauth_tokens_refresh_digest_idx ON oauth_tokens (digest) WHERE kind = 'refresh';
CREATE INDEX oauth_tokens_family_idx ON oauth_tokens (family_id);
CREATE INDEX oauth_tokens_parent_idx ON oauth_tokens (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX oauth_tokens_agent_idx ON oauth_tokens (agent_id);
