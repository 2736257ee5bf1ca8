-- The client assertions (private_key_jwt) agents authenticated with, by jti, until they
-- expire: a jti is accepted once, on every replica.
CREATE TABLE oauth_client_assertions (
    agent_id    uuid        NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    jti         text        NOT NULL,
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (agent_id, jti)
);
