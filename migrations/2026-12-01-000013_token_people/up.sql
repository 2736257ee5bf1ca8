-- Tokens for people: the member a token was issued for (lists show it as the token's
-- person; it grants nothing), and when the token last authenticated a request (written in
-- batches by the servers, to the minute, only ever moving forward). Both nullable: a
-- replica of the previous release reads and writes tokens as before.
ALTER TABLE api_tokens
    ADD COLUMN assigned_to  uuid        REFERENCES users (id) ON DELETE SET NULL,
    ADD COLUMN last_used_at timestamptz;
-- Deleting a person looks up the tokens assigned to them.
CREATE INDEX api_tokens_assigned_to_idx ON api_tokens (assigned_to) WHERE assigned_to IS NOT NULL;
