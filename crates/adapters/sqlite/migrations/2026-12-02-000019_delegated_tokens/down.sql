DROP INDEX delegations_revoked_idx;
DROP INDEX oauth_tokens_revoked_idx;
DROP INDEX oauth_tokens_delegation_idx;
DROP INDEX oauth_tokens_principal_idx;
ALTER TABLE oauth_tokens DROP COLUMN may_act;
ALTER TABLE oauth_tokens DROP COLUMN chain;
ALTER TABLE oauth_tokens DROP COLUMN delegation_id;
ALTER TABLE oauth_tokens DROP COLUMN principal_id;
