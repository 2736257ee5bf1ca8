//! Audit: the audit trail's reader (every domain writes its own records).

use d2_audit::AuditService;

use super::Shared;

pub(crate) fn build(shared: &Shared<'_>) -> AuditService {
    AuditService::new(shared.repositories.clone())
}
