//! SQLite's spelling of the audit trail's searches the shared code makes.

/// An audit record's `metadata.task_id` equals the value bound after it (served by the
/// index `audit_logs_account_task_idx`).
pub(crate) const TASK_IS: &str = "json_extract(audit_logs.metadata, '$.task_id') = ";
