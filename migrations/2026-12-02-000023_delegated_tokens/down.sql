DROP INDEX delegations_revoked_idx;
DROP INDEX oauth_tokens_revoked_idx;
ALTER TABLE oauth_tokens
    DROP COLUMN may_act,
    DROP COLUMN chain,
    DROP COLUMN delegation_id,
    DROP COLUMN principal_id;
