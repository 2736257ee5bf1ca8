-- Tokens for people (as the PostgreSQL migration 2026-12-01-000013): the member a token
-- was issued for, and when it last authenticated a request.
ALTER TABLE api_tokens ADD COLUMN assigned_to text REFERENCES users (id) ON DELETE SET NULL;
ALTER TABLE api_tokens ADD COLUMN last_used_at text;
CREATE INDEX api_tokens_assigned_to_idx ON api_tokens (assigned_to) WHERE assigned_to IS NOT NULL;
