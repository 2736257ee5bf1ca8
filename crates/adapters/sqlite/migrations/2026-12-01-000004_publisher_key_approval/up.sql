-- Approval of publisher keys, and the content identity of policy versions (as the
-- PostgreSQL migration 2026-12-01-000008).

ALTER TABLE accounts ADD COLUMN require_publisher_key_approval boolean NOT NULL DEFAULT 0;

ALTER TABLE publisher_keys ADD COLUMN pending boolean NOT NULL DEFAULT 0;
ALTER TABLE publisher_keys ADD COLUMN approved_at text;
ALTER TABLE publisher_keys ADD COLUMN approved_by text;

ALTER TABLE policies ADD COLUMN content_digest text;
CREATE INDEX policies_app_content_idx ON policies (account_id, app_name, content_digest);
