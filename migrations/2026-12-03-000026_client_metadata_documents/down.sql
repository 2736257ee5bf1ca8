DROP TABLE oauth_client_policies;
DROP INDEX agents_metadata_url_idx;
DELETE FROM agents WHERE metadata_url IS NOT NULL OR auth_method = 'none';
ALTER TABLE agents DROP COLUMN metadata_url;
ALTER TABLE agents DROP CONSTRAINT agents_auth_method_check;
ALTER TABLE agents ADD CONSTRAINT agents_auth_method_check
    CHECK (auth_method IN ('client_secret_basic', 'client_secret_post', 'private_key_jwt'));
