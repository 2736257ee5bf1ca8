-- DPoP (as the PostgreSQL migration 2026-12-03-000025).
ALTER TABLE oauth_tokens ADD COLUMN dpop_jkt text;
