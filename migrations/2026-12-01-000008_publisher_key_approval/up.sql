-- Approval of publisher keys, and the content identity of policy versions.

-- When set, keys registered by credentials without the `admin` scope wait for approval.
ALTER TABLE accounts ADD COLUMN require_publisher_key_approval boolean NOT NULL DEFAULT false;

-- A pending key authorises nothing until approved; keys registered so far are active.
ALTER TABLE publisher_keys
    ADD COLUMN pending     boolean NOT NULL DEFAULT false,
    ADD COLUMN approved_at timestamptz,
    ADD COLUMN approved_by text,
    ADD CONSTRAINT publisher_keys_approval_check
        CHECK ((approved_at IS NULL) = (approved_by IS NULL) AND NOT (pending AND approved_at IS NOT NULL));

-- SHA-256 of the canonical document without `metadata.expires`: publishing an earlier
-- version's content is refused (that is a revert). Rows written before this column are
-- filled in by the server the first time their app is published again.
ALTER TABLE policies ADD COLUMN content_digest text;
-- One row per published version: small enough to index without CONCURRENTLY.
CREATE INDEX policies_app_content_idx ON policies (account_id, app_name, content_digest);
