//! The invitations service: invite, list, cancel, show and accept, and the task that mails
//! an invitation.

use std::sync::Arc;

use d2_audit::{AuditAction, AuditEntry};
use d2_kernel::{
    AuthContext, Clock, Email, Entitlements, MailError, Mailer, NewTask, Pepper, Role, Scope, Task,
    TaskFailure, TaskHandler, UserId,
};
use serde_json::json;

use crate::invitation::{
    AcceptOutcome, Invitation, InvitationDetails, InvitationId, InvitationToken, InviteOutcome,
};
use crate::ports::{InvitationRepo, MemberRepo};
use crate::service::{MemberError, caller_role};

/// The kind of the task that mails an invitation.
pub const INVITATION_EMAIL: &str = "invitation.email";

/// An invitation just made, and its token when the caller is the one to pass it on (no
/// mail server is configured).
#[derive(Debug)]
pub struct Invited {
    pub invitation: Invitation,
    pub token: Option<InvitationToken>,
}

pub struct Invitations {
    repo: Arc<dyn InvitationRepo>,
    members: Arc<dyn MemberRepo>,
    entitlements: Arc<dyn Entitlements>,
    pepper: Arc<Pepper>,
    clock: Arc<dyn Clock>,
    /// Whether invitations are mailed (by the `invitation.email` task).
    mailed: bool,
}

impl std::fmt::Debug for Invitations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invitations")
            .field("mailed", &self.mailed)
            .finish_non_exhaustive()
    }
}

impl Invitations {
    pub fn new(
        repo: Arc<dyn InvitationRepo>,
        members: Arc<dyn MemberRepo>,
        entitlements: Arc<dyn Entitlements>,
        pepper: Arc<Pepper>,
        clock: Arc<dyn Clock>,
        mailed: bool,
    ) -> Self {
        Self {
            repo,
            members,
            entitlements,
            pepper,
            clock,
            mailed,
        }
    }

    /// Invites `email` to the caller's account as `role` (`admin`; only owners invite
    /// owners). Audited as `invitation.create`.
    pub async fn invite(
        &self,
        ctx: &AuthContext,
        email: &str,
        role: Role,
    ) -> Result<Invited, MemberError> {
        ctx.require(Scope::Admin)?;
        if !caller_role(ctx).may_assign(role, role) {
            return Err(MemberError::OwnerRequired);
        }
        let email = parse_email(email)?;
        let max_members = self
            .entitlements
            .entitlement(ctx.account_id)
            .await
            .map_err(MemberError::Entitlement)?
            .quotas
            .max_members;
        let now = self.clock.now();
        let invitation = Invitation::new(ctx.account_id, email, role, ctx.user_id, now);
        let token = if self.mailed {
            None
        } else {
            Some(InvitationToken::generate().map_err(|_| MemberError::Randomness)?)
        };
        let digest = token.as_ref().map(|token| self.pepper.digest(token));
        let task = self.mailed.then(|| NewTask {
            kind: INVITATION_EMAIL.to_owned(),
            account_id: Some(ctx.account_id),
            payload: json!({ "invitation_id": invitation.id }),
            run_at: now,
        });
        let audit = AuditEntry::by(ctx, AuditAction::InvitationCreate, now)
            .target("invitation", invitation.id)
            .metadata(json!({
                "email": invitation.email,
                "role": role.as_str(),
                "expires_at": invitation.expires_at,
                "mailed": self.mailed,
            }));
        match self
            .repo
            .create_invitation(
                &invitation,
                digest.as_ref(),
                max_members,
                &audit,
                task.as_ref(),
            )
            .await?
        {
            InviteOutcome::Created => Ok(Invited { invitation, token }),
            InviteOutcome::MemberLimit => Err(MemberError::MemberLimit(max_members)),
            InviteOutcome::AlreadyMember => Err(MemberError::AlreadyMember),
            InviteOutcome::AlreadyInvited => Err(MemberError::AlreadyInvited),
        }
    }

    /// The caller's account's pending invitations (`admin`).
    pub async fn pending(&self, ctx: &AuthContext) -> Result<Vec<Invitation>, MemberError> {
        ctx.require(Scope::Admin)?;
        Ok(self
            .repo
            .pending_invitations(ctx.account_id, self.clock.now())
            .await?)
    }

    /// Cancels a pending invitation of the caller's account (`admin`). Audited as
    /// `invitation.cancel`.
    pub async fn cancel(&self, ctx: &AuthContext, id: InvitationId) -> Result<(), MemberError> {
        ctx.require(Scope::Admin)?;
        let now = self.clock.now();
        let audit =
            AuditEntry::by(ctx, AuditAction::InvitationCancel, now).target("invitation", id);
        if self
            .repo
            .cancel_invitation(ctx.account_id, id, now, &audit)
            .await?
        {
            Ok(())
        } else {
            Err(MemberError::InvitationNotFound)
        }
    }

    /// What the acceptance page shows: a pending invitation by its token.
    pub async fn show(&self, token: &str) -> Result<InvitationDetails, MemberError> {
        let details = self.find(token).await?;
        self.usable(&details.invitation)?;
        Ok(details)
    }

    /// Accepts an invitation for the signed-in person `user`, whose email (verified by
    /// their identity provider) must be the invited one. Audited as `invitation.accept`.
    pub async fn accept(
        &self,
        user: UserId,
        token: &str,
    ) -> Result<(InvitationDetails, Role), MemberError> {
        let details = self.find(token).await?;
        self.usable(&details.invitation)?;
        let person = self
            .members
            .find_user(user)
            .await?
            .ok_or(MemberError::UserSessionRequired)?;
        let same_email = person
            .email
            .as_deref()
            .is_some_and(|email| email.eq_ignore_ascii_case(&details.invitation.email));
        if !same_email || !person.email_verified {
            return Err(MemberError::InvitationEmailMismatch);
        }
        let now = self.clock.now();
        let audit_of = |invitation: &Invitation| {
            AuditEntry::by_user(
                invitation.account_id,
                user,
                AuditAction::InvitationAccept,
                now,
            )
            .target("invitation", invitation.id)
            .metadata(json!({ "role": invitation.role.as_str(), "email": invitation.email }))
        };
        let digest = self.pepper.digest_text(token);
        match self
            .repo
            .accept_invitation(&digest, user, now, &audit_of)
            .await?
        {
            Some(AcceptOutcome::Accepted(_, role)) => Ok((details, role)),
            Some(AcceptOutcome::Used) => Err(MemberError::InvitationUsed),
            Some(AcceptOutcome::Expired) => Err(MemberError::InvitationExpired),
            Some(AcceptOutcome::AlreadyMember) => Err(MemberError::AlreadyMember),
            None => Err(MemberError::InvitationNotFound),
        }
    }

    async fn find(&self, token: &str) -> Result<InvitationDetails, MemberError> {
        // A text that is not an invitation token costs no lookup.
        InvitationToken::check_format(token).map_err(|_| MemberError::InvitationNotFound)?;
        self.repo
            .invitation_by_digest(&self.pepper.digest_text(token))
            .await?
            .ok_or(MemberError::InvitationNotFound)
    }

    fn usable(&self, invitation: &Invitation) -> Result<(), MemberError> {
        if invitation.accepted_at.is_some() || invitation.cancelled_at.is_some() {
            return Err(MemberError::InvitationUsed);
        }
        if invitation.expires_at <= self.clock.now() {
            return Err(MemberError::InvitationExpired);
        }
        Ok(())
    }
}

/// An email address as invitations take it: trimmed, 3 to 254 characters, one `@` with
/// text on both sides, no spaces or control characters.
fn parse_email(raw: &str) -> Result<String, MemberError> {
    let email = raw.trim();
    let valid = (3..=254).contains(&email.chars().count())
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && !domain.is_empty() && !domain.contains('@')
        });
    if valid {
        Ok(email.to_owned())
    } else {
        Err(MemberError::InvalidEmail)
    }
}

/// Mails invitations (`invitation.email` tasks): makes the invitation's token, stores its
/// digest, and sends the link. A retry makes a new token (the previous link stops
/// working); an invitation no longer pending is not mailed.
pub struct InvitationMailer {
    repo: Arc<dyn InvitationRepo>,
    mailer: Arc<dyn Mailer>,
    pepper: Arc<Pepper>,
    clock: Arc<dyn Clock>,
    /// The acceptance link is this followed by the token.
    link_base: String,
}

impl std::fmt::Debug for InvitationMailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InvitationMailer").finish_non_exhaustive()
    }
}

impl InvitationMailer {
    pub fn new(
        repo: Arc<dyn InvitationRepo>,
        mailer: Arc<dyn Mailer>,
        pepper: Arc<Pepper>,
        clock: Arc<dyn Clock>,
        link_base: String,
    ) -> Self {
        Self {
            repo,
            mailer,
            pepper,
            clock,
            link_base,
        }
    }

    fn email(&self, details: &InvitationDetails, token: &InvitationToken) -> Email {
        let invitation = &details.invitation;
        let inviter = details
            .inviter_name
            .as_deref()
            .unwrap_or("An administrator");
        let link = format!("{}{}", self.link_base, token.expose());
        let text = format!(
            "{inviter} invited you to join {account} on D2 as {role}.\n\n\
             Accept the invitation: {link}\n\n\
             The link works once, until {expires} (UTC). If you did not expect this \
             invitation, ignore this email.\n",
            account = details.account_name,
            role = invitation.role.as_str(),
            expires = invitation.expires_at.format("%Y-%m-%d %H:%M"),
        );
        Email {
            to: invitation.email.clone(),
            subject: format!("You are invited to join {} on D2", details.account_name),
            text,
            html: None,
        }
    }
}

#[async_trait::async_trait]
impl TaskHandler for InvitationMailer {
    fn kind(&self) -> &'static str {
        INVITATION_EMAIL
    }

    async fn handle(&self, task: &Task) -> Result<(), TaskFailure> {
        let id: InvitationId = task
            .payload
            .get("invitation_id")
            .and_then(|id| id.as_str())
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| TaskFailure::Permanent("the task names no invitation".to_owned()))?;
        let token = InvitationToken::generate()
            .map_err(|_| TaskFailure::Retry("no randomness".to_owned()))?;
        let Some(details) = self
            .repo
            .renew_invitation_token(id, &self.pepper.digest(&token), self.clock.now())
            .await
            .map_err(|error| TaskFailure::Retry(error.to_string()))?
        else {
            // Cancelled, accepted or expired meanwhile: nothing to send.
            return Ok(());
        };
        match self.mailer.send(&self.email(&details, &token)).await {
            Ok(()) => {
                tracing::info!(invitation.id = %id, "invitation mailed");
                Ok(())
            }
            Err(MailError::Unavailable(reason)) => Err(TaskFailure::Retry(reason)),
            Err(MailError::Refused(reason)) => Err(TaskFailure::Permanent(reason)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_and_checked_for_shape() {
        assert_eq!(
            parse_email("  ada@example.com ").unwrap(),
            "ada@example.com"
        );
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@",
            "a b@example.com",
            "a@b@c",
            "a\u{0}@b",
        ] {
            assert!(parse_email(bad).is_err(), "{bad:?}");
        }
        assert!(parse_email(&format!("{}@example.com", "a".repeat(250))).is_err());
    }
}
