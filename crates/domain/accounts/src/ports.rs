use async_trait::async_trait;
use chrono::{DateTime, Utc};
use d2_audit::AuditEntry;
use d2_kernel::{AccountId, StoreError, UserId};

use crate::account::{Account, AccountPatch};

/// Builds the audit record of an update from the account before and after it.
pub type AuditOf<'a> = &'a (dyn Fn(&Account, &Account) -> AuditEntry + Send + Sync);

/// Builds the audit record of a change made by a job from the account as changed.
pub type JobAuditOf<'a> = &'a (dyn Fn(&Account) -> AuditEntry + Send + Sync);

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

    /// How many people are members of the account.
    async fn count_members(&self, id: AccountId) -> Result<u64, StoreError>;

    /// Whether any account exists (an empty store gets its first account in the dev profile).
    async fn has_accounts(&self) -> Result<bool, StoreError>;

    /// The account's first owner (the longest-standing), if it has one: whom a break-glass
    /// token is issued for.
    async fn first_owner(&self, id: AccountId) -> Result<Option<UserId>, StoreError>;

    /// A scheduled job, across all accounts: records the lock of an ended trial
    /// ([`Account::trial_ended_lock`]: `TrialEnded`, since `trial_expires_at`) on at most
    /// `limit` accounts whose plan is `Trial`, that are not locked and whose
    /// `trial_expires_at <= now` (lowest ids first), keeping their plan and
    /// `trial_expires_at`, and writes `audit_of(locked)` for each, all in one transaction.
    /// Returns the ids of the accounts locked; fewer than `limit` means no other expired
    /// trial was available.
    ///
    /// Accounts already locked, without a trial expiry, or on any other plan, are never
    /// touched. Shared
    /// implementations MUST skip accounts another transaction holds (a later run takes
    /// them) rather than wait, and MUST announce each locked account to other processes,
    /// as `update` does.
    async fn lock_expired_trials(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        audit_of: JobAuditOf<'_>,
    ) -> Result<Vec<AccountId>, StoreError>;
}
