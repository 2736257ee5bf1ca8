use std::sync::Arc;

use async_trait::async_trait;
use d2_kernel::{
    AccessError, AccountId, AuthContext, Code, ErrorCode, Page, PageError, PageRequest, Scope,
    StoreError,
};

use crate::entry::{AuditFilter, AuditRecord};

/// Reads the audit trail. Records are written by the repositories of the changes they
/// describe, in the same transaction, so this port only reads.
#[async_trait]
pub trait AuditLog: Send + Sync + 'static {
    /// The records of `account_id` that match `filter`, newest first (by time, then id).
    /// MUST never return another account's records.
    async fn search(
        &self,
        account_id: AccountId,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> Result<Page<AuditRecord>, StoreError>;
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(transparent)]
    Page(#[from] PageError),
    #[error("`since` must be earlier than `until`")]
    InvalidTimeRange,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ErrorCode for AuditError {
    fn code(&self) -> Code {
        match self {
            AuditError::Access(error) => error.code(),
            AuditError::Page(error) => error.code(),
            AuditError::InvalidTimeRange => Code::InvalidTimeRange,
            AuditError::Store(error) => error.code(),
        }
    }
}

/// Lists an account's audit trail for its administrators.
#[derive(Clone)]
pub struct AuditService {
    log: Arc<dyn AuditLog>,
}

impl std::fmt::Debug for AuditService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditService").finish_non_exhaustive()
    }
}

impl AuditService {
    pub fn new(log: Arc<dyn AuditLog>) -> Self {
        Self { log }
    }

    pub async fn list(
        &self,
        ctx: &AuthContext,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> Result<Page<AuditRecord>, AuditError> {
        ctx.require(Scope::Admin)?;
        if let (Some(since), Some(until)) = (filter.since, filter.until)
            && since >= until
        {
            return Err(AuditError::InvalidTimeRange);
        }
        if let Some(cursor) = page.after() {
            cursor.id_as::<i64>()?;
        }
        Ok(self.log.search(ctx.account_id, filter, page).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryAuditLog;
    use crate::{AuditAction, AuditEntry};
    use chrono::{Duration, Utc};
    use d2_kernel::{Credential, Grant, ScopeSet, TokenId};

    fn caller(account_id: AccountId, scopes: ScopeSet) -> AuthContext {
        AuthContext {
            account_id,
            credential: Credential::ApiToken(TokenId::random()),
            user_id: None,
            acting_for: None,
            role: None,
            scopes,
            app_name: None,
        }
    }

    #[tokio::test]
    async fn lists_only_the_callers_account_newest_first_and_pages() {
        let log = Arc::new(MemoryAuditLog::default());
        let mine = AccountId::random();
        let theirs = AccountId::random();
        let start = Utc::now();
        for minute in 0..5 {
            log.append(AuditEntry::system(
                mine,
                AuditAction::TokenCreate,
                start + Duration::minutes(minute),
            ));
        }
        log.append(AuditEntry::system(theirs, AuditAction::TokenCreate, start));
        let service = AuditService::new(log);
        let admin = caller(mine, ScopeSet::all());

        let first = service
            .list(&admin, &AuditFilter::default(), &PageRequest::first(3))
            .await
            .unwrap();
        assert_eq!(first.items.len(), 3);
        assert!(first.items.iter().all(|r| r.entry.account_id == mine));
        assert!(
            first
                .items
                .windows(2)
                .all(|w| w[0].entry.occurred_at > w[1].entry.occurred_at)
        );
        let cursor = first.next.unwrap().encode();
        let second = service
            .list(
                &admin,
                &AuditFilter::default(),
                &PageRequest::parse(Some(3), Some(&cursor)).unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(second.items.len(), 2);
        assert!(second.next.is_none());
    }

    #[tokio::test]
    async fn needs_the_admin_scope_and_a_sane_range() {
        let service = AuditService::new(Arc::new(MemoryAuditLog::default()));
        let account = AccountId::random();
        let dev = caller(account, ScopeSet::new([Grant::Dev]));
        let denied = service
            .list(&dev, &AuditFilter::default(), &PageRequest::first(10))
            .await;
        assert!(matches!(
            denied,
            Err(AuditError::Access(AccessError::InsufficientScope(
                Scope::Admin
            )))
        ));

        let now = Utc::now();
        let backwards = AuditFilter {
            since: Some(now),
            until: Some(now),
            ..AuditFilter::default()
        };
        let admin = caller(account, ScopeSet::all());
        let error = service
            .list(&admin, &backwards, &PageRequest::first(10))
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::InvalidTimeRange);
    }
}
