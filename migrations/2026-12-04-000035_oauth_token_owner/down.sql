ALTER TABLE oauth_tokens
    DROP CONSTRAINT oauth_tokens_agent_account_fkey,
    ADD CONSTRAINT oauth_tokens_account_id_fkey FOREIGN KEY (account_id)
        REFERENCES accounts (id) ON DELETE CASCADE,
    ADD CONSTRAINT oauth_tokens_agent_id_fkey FOREIGN KEY (agent_id)
        REFERENCES agents (id) ON DELETE CASCADE;
DROP INDEX agents_id_account_idx;
