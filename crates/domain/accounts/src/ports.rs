use async_trait::async_trait;
use d2_audit::AuditEntry;
use d2_kernel::{AccountId, StoreError};

use crate::account::{Account, AccountPatch, User};

/// Builds the audit record of an update from the account before and after it.
pub type AuditOf<'a> = &'a (dyn Fn(&Account, &Account) -> AuditEntry + Send + Sync);

/// Storage of accounts and their users.
#[async_trait]
pub trait AccountRepo: Send + Sync + 'static {
    async fn find_account(&self, id: AccountId) -> Result<Option<Account>, StoreError>;

    /// Applies `patch` atomically (no lost update between concurrent patches) and writes
    /// the audit record `audit_of(before, after)` in the same transaction. Returns the
    /// updated account, or `None` if it does not exist (nothing written).
    async fn update(
        &self,
        id: AccountId,
        patch: &AccountPatch,
        audit_of: AuditOf<'_>,
    ) -> Result<Option<Account>, StoreError>;

    async fn count_users(&self, id: AccountId) -> Result<u64, StoreError>;

    /// The account's users, oldest first.
    async fn list_users(&self, id: AccountId) -> Result<Vec<User>, StoreError>;
}
