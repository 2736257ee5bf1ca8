ALTER TABLE oauth_tokens
    DROP COLUMN may_act,
    DROP COLUMN chain,
    DROP COLUMN delegation_id,
    DROP COLUMN principal_id;
