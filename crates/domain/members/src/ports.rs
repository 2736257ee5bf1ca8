//! What the members domain needs from the outside: a store for people and memberships, and
//! an identity provider that verifies sign-in tokens.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use d2_accounts::Account;
use d2_audit::AuditEntry;
use d2_kernel::{AccountId, Code, ErrorCode, NewTask, Role, SecretDigest, StoreError, UserId};

use crate::invitation::{
    AcceptOutcome, Invitation, InvitationDetails, InvitationId, InviteOutcome,
};
use crate::user::{Identity, Member, Membership, User};

/// Builds the audit record of a member change from the member before and after it (`None`
/// after a removal).
pub type MemberAuditOf<'a> = &'a (dyn Fn(&Member, Option<&Member>) -> AuditEntry + Send + Sync);

/// Builds the audit record of an accepted invitation.
pub type InvitationAuditOf<'a> = &'a (dyn Fn(&Invitation) -> AuditEntry + Send + Sync);

/// A change to one membership.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberUpdate {
    SetRole(Role),
    Remove,
}

/// What [`MemberRepo::update_member`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberOutcome {
    /// Done: the member after the change (`None`: removed).
    Changed(Option<Member>),
    /// No such membership.
    NotFound,
    /// The change would leave the account without an owner; nothing was written.
    LastOwner,
    /// The member's role is no longer the one the change was decided on (someone changed it
    /// meanwhile); nothing was written. Holds the role now.
    Stale(Role),
}

/// Storage of people and their memberships. Every write that changes a membership announces
/// [`Change::Member`](d2_kernel::Change::Member) and records its audit entry in the same
/// transaction.
#[async_trait]
pub trait MemberRepo: Send + Sync + 'static {
    /// Records a sign-in and returns the person it proves. The person is found by the
    /// identity's issuer and subject; else, when the provider asserts the email verified,
    /// the oldest person with that email (case-insensitive) and no identity yet (an owner
    /// created by bootstrap) becomes theirs; else a new person is created. Their email,
    /// its verification, their display name (when the identity has them) and
    /// `last_sign_in_at` are updated. Safe under concurrent first sign-ins of one subject:
    /// all answer the same person.
    async fn sign_in(&self, identity: &Identity, at: DateTime<Utc>) -> Result<User, StoreError>;

    async fn find_user(&self, id: UserId) -> Result<Option<User>, StoreError>;

    /// The role of `user` in `account`, if a member.
    async fn role_of(&self, account: AccountId, user: UserId) -> Result<Option<Role>, StoreError>;

    async fn member(&self, account: AccountId, user: UserId) -> Result<Option<Member>, StoreError>;

    /// The account's members, longest-standing first.
    async fn members(&self, account: AccountId) -> Result<Vec<Member>, StoreError>;

    /// The person's memberships, oldest first, with their accounts' names.
    async fn memberships(&self, user: UserId) -> Result<Vec<Membership>, StoreError>;

    /// Creates `account` with `owner` as its only member, an owner, and `audit`, at once.
    async fn create_owned_account(
        &self,
        account: &Account,
        owner: UserId,
        audit: &AuditEntry,
    ) -> Result<(), StoreError>;

    /// Makes `user` a member of `account` with `role`, with `audit`, at once. `false`, and
    /// nothing written, when they already are one.
    async fn add_member(
        &self,
        account: AccountId,
        user: UserId,
        role: Role,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError>;

    /// Changes one membership, atomically with the checks that decide it: the member still
    /// holds `expected` (else [`MemberOutcome::Stale`]), and the account keeps an owner
    /// (else [`MemberOutcome::LastOwner`]). Concurrent changes of one account's members are
    /// serialised, so two owners demoting each other cannot both succeed.
    async fn update_member(
        &self,
        account: AccountId,
        user: UserId,
        expected: Role,
        update: MemberUpdate,
        audit_of: MemberAuditOf<'_>,
    ) -> Result<MemberOutcome, StoreError>;
}

/// An identity the provider vouched for, and until when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedIdentity {
    pub identity: Identity,
    /// The token's `exp`.
    pub expires_at: DateTime<Utc>,
}

/// Why a sign-in token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// Not a token this server accepts: bad signature, algorithm, issuer, audience, shape
    /// or claims. The reason is for the caller and the log; it never repeats the token.
    #[error("the sign-in token is not valid: {0}")]
    Invalid(&'static str),
    #[error("the sign-in token has expired")]
    Expired,
    /// The provider's keys could not be fetched, and none cached can decide.
    #[error("the identity provider is unavailable")]
    Unavailable(String),
}

impl ErrorCode for IdentityError {
    fn code(&self) -> Code {
        match self {
            IdentityError::Invalid(_) => Code::InvalidToken,
            IdentityError::Expired => Code::TokenExpired,
            IdentityError::Unavailable(_) => Code::ServiceUnavailable,
        }
    }
}

/// Verifies identity-provider tokens (JWTs): signature against the provider's keys,
/// issuer, audience, times. Implemented by the OpenID adapter.
#[async_trait]
pub trait IdentityProvider: Send + Sync + 'static {
    async fn verify(&self, token: &str) -> Result<VerifiedIdentity, IdentityError>;
}

/// Storage of invitations. Every write records its audit entry in the same transaction.
#[async_trait]
pub trait InvitationRepo: Send + Sync + 'static {
    /// Stores `invitation` (with the digest of its token when it is made now; `None` when
    /// the email task makes it) and `audit`, and enqueues `email` (the task that sends it,
    /// when mail is configured), at once; unless a member of the account has its email
    /// ([`InviteOutcome::AlreadyMember`]), a pending invitation of the account has it
    /// ([`InviteOutcome::AlreadyInvited`]), or members and pending invitations already
    /// number `max_members` ([`InviteOutcome::MemberLimit`]). Emails compare without case.
    /// Concurrent invitations to one account are serialised, so the limit holds.
    async fn create_invitation(
        &self,
        invitation: &Invitation,
        digest: Option<&SecretDigest>,
        max_members: u32,
        audit: &AuditEntry,
        email: Option<&NewTask>,
    ) -> Result<InviteOutcome, StoreError>;

    /// The account's pending invitations at `now`, newest first.
    async fn pending_invitations(
        &self,
        account: AccountId,
        now: DateTime<Utc>,
    ) -> Result<Vec<Invitation>, StoreError>;

    /// Cancels a pending invitation of `account`, with `audit`. `false` when the account has
    /// no such pending invitation.
    async fn cancel_invitation(
        &self,
        account: AccountId,
        id: InvitationId,
        now: DateTime<Utc>,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError>;

    /// The invitation whose token has `digest`, whatever its state.
    async fn invitation_by_digest(
        &self,
        digest: &SecretDigest,
    ) -> Result<Option<InvitationDetails>, StoreError>;

    /// Gives a pending invitation a new token (its email task, before sending it); `None`,
    /// and nothing written, when it is no longer pending at `now`.
    async fn renew_invitation_token(
        &self,
        id: InvitationId,
        digest: &SecretDigest,
        now: DateTime<Utc>,
    ) -> Result<Option<InvitationDetails>, StoreError>;

    /// Accepts the invitation whose token has `digest` for `user`, once: the invitation is
    /// used and the person becomes a member with its role, with `audit`, at once.
    /// `None` when no invitation has the digest.
    async fn accept_invitation(
        &self,
        digest: &SecretDigest,
        user: UserId,
        now: DateTime<Utc>,
        audit_of: InvitationAuditOf<'_>,
    ) -> Result<Option<AcceptOutcome>, StoreError>;
}
