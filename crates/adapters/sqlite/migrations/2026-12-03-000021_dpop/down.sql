ALTER TABLE oauth_tokens DROP COLUMN dpop_jkt;
