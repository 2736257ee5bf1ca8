DROP INDEX api_tokens_assigned_to_idx;
ALTER TABLE api_tokens DROP COLUMN last_used_at;
ALTER TABLE api_tokens DROP COLUMN assigned_to;
