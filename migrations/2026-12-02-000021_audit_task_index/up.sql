-- An OAuth task's audit trail (its issuances, refreshes, reuses and introspection refusals
-- carry `metadata.task_id`), read by the admins' task view and `GET /v1/audit?task_id=`.
CREATE INDEX audit_logs_account_task_idx ON audit_logs (account_id, (metadata ->> 'task_id'));
