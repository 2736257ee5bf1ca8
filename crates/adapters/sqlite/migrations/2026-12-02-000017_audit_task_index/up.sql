-- An OAuth task's audit trail (as the PostgreSQL migration 2026-12-02-000021).
CREATE INDEX audit_logs_account_task_idx ON audit_logs (account_id, json_extract(metadata, '$.task_id'));
