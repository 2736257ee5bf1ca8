-- A token's agent and account are checked by one foreign key instead of two: the pair
-- (agent_id, account_id) must name an agent of that account, which says both that the
-- agent exists and that it belongs to the token's account (the two keys it replaces said
-- the first only). Deleting an account still deletes its tokens, through its agents. Each
-- key is a query per token row on the token endpoint's write path, so this halves them.
CREATE UNIQUE INDEX agents_id_account_idx ON agents (id, account_id);
ALTER TABLE oauth_tokens
    DROP CONSTRAINT oauth_tokens_account_id_fkey,
    DROP CONSTRAINT oauth_tokens_agent_id_fkey,
    ADD CONSTRAINT oauth_tokens_agent_account_fkey FOREIGN KEY (agent_id, account_id)
        REFERENCES agents (id, account_id) ON DELETE CASCADE;
