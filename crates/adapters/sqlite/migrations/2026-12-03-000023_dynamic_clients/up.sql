-- Clients that register themselves (as the PostgreSQL migration 2026-12-03-000027).
ALTER TABLE agents ADD COLUMN registered_dynamically boolean NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN dynamic_fingerprint blob
    CHECK (length(dynamic_fingerprint) = 32);
CREATE UNIQUE INDEX agents_dynamic_fingerprint_idx ON agents (account_id, dynamic_fingerprint);
CREATE INDEX agents_dynamic_created_idx ON agents (created_at) WHERE registered_dynamically;

ALTER TABLE oauth_client_policies ADD COLUMN dynamic_registration boolean NOT NULL DEFAULT 0;
ALTER TABLE oauth_client_policies ADD COLUMN initial_access_digest blob
    CHECK (length(initial_access_digest) = 32);
