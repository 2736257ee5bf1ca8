//! Invitations (seed 001 §5.6): an admin invites an email to an account with a role; the
//! person behind that email accepts once, within seven days, and becomes a member.
//!
//! The token that accepts an invitation is a secret of the server's one format
//! ([`InvitationToken`], `d2inv_...`), shown once (in the email, or in the answer to the
//! inviter when no mail server is configured) and stored only as its keyed digest. When
//! mail is configured, the token is made by the task that sends the email, right before
//! sending it: no secret waits in the task queue.

use chrono::{DateTime, Duration, Utc};
use d2_kernel::{AccountId, Role, Secret, SecretFormat, UserId};

d2_kernel::typed_id!(
    /// An invitation.
    InvitationId
);

/// The format of invitation tokens.
#[derive(Debug)]
pub enum InvitationFormat {}

impl SecretFormat for InvitationFormat {
    const NAME: &'static str = "InvitationToken";
    const PREFIX: &'static str = "d2inv_";
}

pub type InvitationToken = Secret<InvitationFormat>;

/// How long an invitation can be accepted.
pub const INVITATION_LIFETIME_DAYS: i64 = 7;

/// An invitation, as its account's admins see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invitation {
    pub id: InvitationId,
    pub account_id: AccountId,
    /// Where it was sent, as the inviter wrote it (compared without case).
    pub email: String,
    pub role: Role,
    pub invited_by: Option<UserId>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub accepted_at: Option<DateTime<Utc>>,
    pub accepted_by: Option<UserId>,
    pub cancelled_at: Option<DateTime<Utc>>,
}

impl Invitation {
    pub fn new(
        account_id: AccountId,
        email: String,
        role: Role,
        invited_by: Option<UserId>,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id: InvitationId::random(),
            account_id,
            email,
            role,
            invited_by,
            created_at: now,
            expires_at: d2_kernel::later(now, Duration::days(INVITATION_LIFETIME_DAYS)),
            accepted_at: None,
            accepted_by: None,
            cancelled_at: None,
        }
    }

    /// Neither accepted nor cancelled, and not expired at `now`.
    pub fn is_pending(&self, now: DateTime<Utc>) -> bool {
        self.accepted_at.is_none() && self.cancelled_at.is_none() && now < self.expires_at
    }
}

/// What the acceptance page shows of an invitation (`GET /public/invitations/{token}`),
/// and what its email says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvitationDetails {
    pub invitation: Invitation,
    pub account_name: String,
    /// The inviter's display name, else full name, else email; `None` for a token.
    pub inviter_name: Option<String>,
}

/// What [`crate::InvitationRepo::create_invitation`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InviteOutcome {
    Created,
    /// Members and pending invitations already number the plan's `max_members`.
    MemberLimit,
    /// A member of the account already has this email.
    AlreadyMember,
    /// A pending invitation of the account already has this email.
    AlreadyInvited,
}

/// What [`crate::InvitationRepo::accept_invitation`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcceptOutcome {
    /// The person is a member now, with this role.
    Accepted(AccountId, Role),
    /// Accepted or cancelled before.
    Used,
    Expired,
    /// The person already is a member of the account; the invitation stays pending.
    AlreadyMember,
}
