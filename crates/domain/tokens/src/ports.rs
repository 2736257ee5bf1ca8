use async_trait::async_trait;
use chrono::{DateTime, Utc};
use d2_accounts::Account;
use d2_audit::AuditEntry;
use d2_kernel::{AccountId, Page, PageRequest, StoreError, TokenId};
use d2_members::User;

use crate::secret::TokenDigest;
use crate::token::{ApiToken, ListedToken, NewToken, TokenPatch};

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
        previous: Box<ApiToken>,
    },
    AlreadyRevoked,
    /// It has been rotated before; rotate its replacement instead.
    AlreadyRotated,
    Expired,
    NotFound,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IssueOutcome {
    Issued,
    /// The account holds `max_active` tokens that work already; nothing was written.
    LimitReached,
    /// The assignee is not a member of the token's account; nothing was written.
    NotAMember,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// The token as changed.
    Updated(Box<ApiToken>),
    AlreadyRevoked,
    Expired,
    /// The patch moves the expiry of a rotated token (whose expiry ends its grace period).
    AlreadyRotated,
    NotFound,
}

/// Builds the audit record of a token changed by a job, from the token as changed.
pub type TokenAuditOf<'a> = &'a (dyn Fn(&ApiToken) -> AuditEntry + Send + Sync);

/// Builds the audit record of a token change from the token before and after it.
pub type TokenChangeAuditOf<'a> = &'a (dyn Fn(&ApiToken, &ApiToken) -> AuditEntry + Send + Sync);

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

    /// The token with the names of its creator and assignee (read with it, not one query
    /// per person).
    async fn listed_token(
        &self,
        account_id: AccountId,
        id: TokenId,
    ) -> Result<Option<ListedToken>, StoreError>;

    /// The account's tokens, newest first by `(created_at, id)`, revoked ones included,
    /// each with the names of its creator and assignee, read in the same query.
    async fn list_tokens(
        &self,
        account_id: AccountId,
        page: &PageRequest,
    ) -> Result<Page<ListedToken>, StoreError>;

    /// Stores a token and its audit record in one transaction, unchecked (the control
    /// plane's tokens). MUST return `StoreError::Conflict` if the id or digest exists.
    async fn insert(&self, token: &NewToken, audit: &AuditEntry) -> Result<(), StoreError>;

    /// Stores a token issued in its account, with its audit record, in one transaction,
    /// when the account holds fewer than `max_active` tokens that work at the token's
    /// `created_at` (neither revoked nor expired), and its assignee, if any, is a member
    /// of the account. The count and the insert MUST be atomic against other issues in
    /// the same account: of concurrent issues for the last free place, one wins. Writes
    /// nothing unless the outcome is `Issued`. MUST return `StoreError::Conflict` if the id
    /// or digest exists.
    async fn issue(
        &self,
        token: &NewToken,
        max_active: u32,
        audit: &AuditEntry,
    ) -> Result<IssueOutcome, StoreError>;

    /// Changes a token's name or expiry under a lock on it, checking its state at `at`
    /// first, with `audit_of(before, after)`, in one transaction. Writes nothing unless the
    /// outcome is `Updated`. Shared implementations MUST announce the change (cached
    /// verifications hold the expiry).
    async fn update_token(
        &self,
        account_id: AccountId,
        id: TokenId,
        patch: &TokenPatch,
        at: DateTime<Utc>,
        audit_of: TokenChangeAuditOf<'_>,
    ) -> Result<UpdateOutcome, StoreError>;

    /// Records when tokens were used: each token's `last_used_at` becomes the later of the
    /// stored value and the one given, so it only moves forward (writers of several
    /// processes may flush in any order). Ids of tokens that do not exist are ignored. One
    /// statement for the whole batch; not audited and not announced (no cache holds it).
    async fn record_usage(&self, used: &[(TokenId, DateTime<Utc>)]) -> Result<(), StoreError>;

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
