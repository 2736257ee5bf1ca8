ALTER TABLE oauth_client_policies DROP COLUMN initial_access_digest;
ALTER TABLE oauth_client_policies DROP COLUMN dynamic_registration;
DROP INDEX agents_dynamic_created_idx;
DROP INDEX agents_dynamic_fingerprint_idx;
DELETE FROM agents WHERE registered_dynamically;
ALTER TABLE agents DROP COLUMN dynamic_fingerprint;
ALTER TABLE agents DROP COLUMN registered_dynamically;
