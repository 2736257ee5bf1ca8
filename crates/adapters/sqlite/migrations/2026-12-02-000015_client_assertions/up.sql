-- Spent client assertions (as the PostgreSQL migration 2026-12-02-000019).
CREATE TABLE oauth_client_assertions (
    agent_id    text    NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    jti         text    NOT NULL,
    expires_at  text    NOT NULL,
    PRIMARY KEY (agent_id, jti)
);
