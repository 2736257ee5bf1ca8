use async_trait::async_trait;
use chrono::{DateTime, Utc};
use d2_accounts::Account;
use d2_audit::AuditEntry;
use d2_kernel::{AccountId, Page, PageRequest, StoreError, TokenId};
use d2_members::User;

use crate::secret::TokenDigest;
use crate::token::{ApiToken, NewToken};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RevokeOutcome {
    Revoked,
    /// It was revoked before; nothing was written.
    AlreadyRevoked,
    NotFound,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RotateOutcome {
    /// The replacement is stored; `previous` is the old token as it is now (with its
    /// shortened expiry).
    Rotated {
        previous: ApiToken,
    },
    AlreadyRevoked,
    /// It has been rotated before; rotate its replacement instead.
    AlreadyRotated,
    Expired,
    NotFound,
}

/// Builds the audit record of a token changed by a job, from the token as changed.
pub type TokenAuditOf<'a> = &'a (dyn Fn(&ApiToken) -> AuditEntry + Send + Sync);

/// Storage of API tokens.
///
/// Implementations shared between processes (a database) MUST announce every revoke,
/// rotate and expiry to the other processes, so their verification caches drop the token (the
/// PostgreSQL adapter uses `NOTIFY` in the same transaction).
#[async_trait]
pub trait TokenRepo: Send + Sync + 'static {
    /// The token with this digest, in any account (the digest is the credential), whatever
    /// its state: the verifier tells revoked and expired tokens apart.
    async fn find_by_digest(&self, digest: &TokenDigest) -> Result<Option<ApiToken>, StoreError>;

    async fn find_token(
        &self,
        account_id: AccountId,
        id: TokenId,
    ) -> Result<Option<ApiToken>, StoreError>;

    /// The account's tokens, newest first by `(created_at, id)`, revoked ones included.
    async fn list_tokens(
        &self,
        account_id: AccountId,
        page: &PageRequest,
    ) -> Result<Page<ApiToken>, StoreError>;

    /// Stores a token and its audit record in one transaction. MUST return
    /// `StoreError::Conflict` if the id or digest exists.
    async fn insert(&self, token: &NewToken, audit: &AuditEntry) -> Result<(), StoreError>;

    /// Marks the token revoked at `at` and writes `audit`, in one transaction. Writes
    /// nothing unless the outcome is `Revoked`.
    async fn revoke(
        &self,
        account_id: AccountId,
        id: TokenId,
        at: DateTime<Utc>,
        audit: &AuditEntry,
    ) -> Result<RevokeOutcome, StoreError>;

    /// Stores `replacement`, links the old token to it and moves the old token's expiry
    /// to `grace_until` (or keeps an earlier one), with `audit`, in one transaction. The old
    /// token's state is checked under a lock at `at`; writes nothing unless the outcome
    /// is `Rotated`.
    async fn rotate(
        &self,
        account_id: AccountId,
        id: TokenId,
        replacement: &NewToken,
        at: DateTime<Utc>,
        grace_until: DateTime<Utc>,
        audit: &AuditEntry,
    ) -> Result<RotateOutcome, StoreError>;

    /// A scheduled job, across all accounts: marks at most `limit` tokens that are not
    /// revoked and whose `expires_at <= now` (lowest ids first) as revoked at their own
    /// `expires_at`, the instant they stopped working, and writes `audit_of(token)` for
    /// each (the token as changed), all in one transaction. Rotated tokens are among them
    /// once their grace period has ended. Returns the ids of the tokens changed; fewer
    /// than `limit` means no other expired token was available.
    ///
    /// Tokens without an expiry are never touched. Shared implementations MUST skip tokens
    /// another transaction holds (a later run takes them) rather than wait.
    async fn revoke_expired(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        audit_of: TokenAuditOf<'_>,
    ) -> Result<Vec<TokenId>, StoreError>;
}

/// Creation of a whole new tenant.
#[async_trait]
pub trait BootstrapRepo: Send + Sync + 'static {
    /// Stores the account, its owner (a person, and their membership as the account's
    /// owner), its first token and the audit record in one transaction.
    async fn create_account(
        &self,
        account: &Account,
        owner: &User,
        token: &NewToken,
        audit: &AuditEntry,
    ) -> Result<(), StoreError>;
}
