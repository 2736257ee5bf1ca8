-- Clients that register themselves (RFC 7591): marked, and those holding no shared secret
-- found again by their metadata's digest, one agent per account and digest.
ALTER TABLE agents ADD COLUMN registered_dynamically boolean NOT NULL DEFAULT false;
ALTER TABLE agents ADD COLUMN dynamic_fingerprint bytea
    CHECK (length(dynamic_fingerprint) = 32);
CREATE UNIQUE INDEX agents_dynamic_fingerprint_idx ON agents (account_id, dynamic_fingerprint);
-- What the reaper of unused registrations reads.
CREATE INDEX agents_dynamic_created_idx ON agents (created_at) WHERE registered_dynamically;

-- Whether an account lets clients register, and the digest of the initial access token
-- they present.
ALTER TABLE oauth_client_policies ADD COLUMN dynamic_registration boolean NOT NULL DEFAULT false;
ALTER TABLE oauth_client_policies ADD COLUMN initial_access_digest bytea
    CHECK (length(initial_access_digest) = 32);
