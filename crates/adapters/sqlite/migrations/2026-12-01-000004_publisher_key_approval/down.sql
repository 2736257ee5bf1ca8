DROP INDEX policies_app_content_idx;
ALTER TABLE policies DROP COLUMN content_digest;
ALTER TABLE publisher_keys DROP COLUMN approved_by;
ALTER TABLE publisher_keys DROP COLUMN approved_at;
ALTER TABLE publisher_keys DROP COLUMN pending;
ALTER TABLE accounts DROP COLUMN require_publisher_key_approval;
