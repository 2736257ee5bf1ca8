DROP INDEX policies_app_content_idx;
ALTER TABLE policies DROP COLUMN content_digest;
ALTER TABLE publisher_keys
    DROP CONSTRAINT publisher_keys_approval_check,
    DROP COLUMN approved_by,
    DROP COLUMN approved_at,
    DROP COLUMN pending;
ALTER TABLE accounts DROP COLUMN require_publisher_key_approval;
