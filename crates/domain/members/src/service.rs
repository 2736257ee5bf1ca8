//! The members service: who a person is, which accounts they belong to, and changes to an
//! account's members.

use std::sync::Arc;

use d2_accounts::{Account, AccountName, InvalidAccountName};
use d2_audit::{AuditAction, AuditEntry};
use d2_kernel::{
    AccessError, AccountId, AuthContext, Clock, Code, Credential, ErrorCode, Role, Scope,
    StoreError, UserId,
};
use serde_json::json;

use crate::ports::{IdentityError, MemberOutcome, MemberRepo, MemberUpdate};
use crate::sessions::SessionVerifier;
use crate::user::{Member, Membership, User};

#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("you are not a member of this account")]
    NotAMember,
    #[error("this route is for signed-in people: present an identity provider's token")]
    UserSessionRequired,
    #[error("the account has no such member")]
    NotFound,
    #[error("only an owner may make, change or remove an owner")]
    OwnerRequired,
    #[error("the account must keep at least one owner")]
    LastOwner,
    #[error("the member changed meanwhile: read it again and retry")]
    Conflict,
    #[error(transparent)]
    InvalidAccountName(#[from] InvalidAccountName),
    #[error(
        "an email must be 3 to 254 characters, with one `@` between a name and a domain, and no spaces"
    )]
    InvalidEmail,
    #[error("the plan allows {0} members, counting pending invitations")]
    MemberLimit(u32),
    #[error("a member of the account already has this email")]
    AlreadyMember,
    #[error(
        "a pending invitation of the account already has this email: cancel it to invite again"
    )]
    AlreadyInvited,
    #[error("no such invitation")]
    InvitationNotFound,
    #[error("the invitation was accepted or cancelled")]
    InvitationUsed,
    #[error("the invitation has expired")]
    InvitationExpired,
    #[error(
        "the invitation is for another email: sign in as the invited person, with an email your identity provider has verified"
    )]
    InvitationEmailMismatch,
    #[error("the system random number generator failed")]
    Randomness,
    #[error(transparent)]
    Entitlement(d2_kernel::EntitlementError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ErrorCode for MemberError {
    fn code(&self) -> Code {
        match self {
            MemberError::Access(error) => error.code(),
            MemberError::Identity(error) => error.code(),
            MemberError::NotAMember => Code::NotAMember,
            MemberError::UserSessionRequired => Code::UserSessionRequired,
            MemberError::NotFound => Code::MemberNotFound,
            MemberError::OwnerRequired => Code::OwnerRequired,
            MemberError::LastOwner => Code::LastOwner,
            MemberError::Conflict => Code::Conflict,
            MemberError::InvalidAccountName(_) => Code::InvalidAccountName,
            MemberError::InvalidEmail => Code::InvalidEmail,
            MemberError::MemberLimit(_) => Code::MemberLimit,
            MemberError::AlreadyMember => Code::AlreadyMember,
            MemberError::AlreadyInvited => Code::AlreadyInvited,
            MemberError::InvitationNotFound => Code::InvitationNotFound,
            MemberError::InvitationUsed => Code::InvitationUsed,
            MemberError::InvitationExpired => Code::InvitationExpired,
            MemberError::InvitationEmailMismatch => Code::InvitationEmailMismatch,
            MemberError::Randomness => Code::Internal,
            MemberError::Entitlement(error) => error.code(),
            MemberError::Store(error) => error.code(),
        }
    }
}

/// A person and the accounts they belong to (`GET /v1/users/me`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Me {
    pub user: User,
    pub memberships: Vec<Membership>,
}

/// How many times a member change is decided again when the member changed under it.
const ATTEMPTS: usize = 3;

pub struct MembersService {
    repo: Arc<dyn MemberRepo>,
    sessions: Option<Arc<SessionVerifier>>,
    clock: Arc<dyn Clock>,
    trial_days: u32,
}

impl std::fmt::Debug for MembersService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MembersService").finish_non_exhaustive()
    }
}

impl MembersService {
    /// `sessions` is `None` where no identity provider is configured (nobody signs in, and
    /// member changes are made with admin tokens).
    pub fn new(
        repo: Arc<dyn MemberRepo>,
        sessions: Option<Arc<SessionVerifier>>,
        clock: Arc<dyn Clock>,
        trial_days: u32,
    ) -> Self {
        Self {
            repo,
            sessions,
            clock,
            trial_days,
        }
    }

    /// The signed-in person and their memberships.
    pub async fn me(&self, user: UserId) -> Result<Me, MemberError> {
        let user = self
            .repo
            .find_user(user)
            .await?
            .ok_or(MemberError::UserSessionRequired)?;
        let memberships = self.repo.memberships(user.id).await?;
        Ok(Me { user, memberships })
    }

    /// A new trial account, with the signed-in person as its owner.
    pub async fn create_account(&self, user: UserId, name: &str) -> Result<Account, MemberError> {
        let now = self.clock.now();
        let account = Account::new_trial(
            AccountId::random(),
            AccountName::parse(name)?,
            now,
            self.trial_days,
        );
        let audit = AuditEntry::by_user(account.id, user, AuditAction::AccountCreate, now)
            .target("account", account.id)
            .metadata(json!({
                "name": account.name.as_str(),
                "plan": account.plan.as_str(),
                "trial_expires_at": account.trial_expires_at,
            }));
        self.repo
            .create_owned_account(&account, user, &audit)
            .await?;
        tracing::info!(account.id = %account.id, user.id = %user, "account created");
        Ok(account)
    }

    /// The members of `account` (`members.read`).
    pub async fn members(
        &self,
        ctx: &AuthContext,
        account: AccountId,
    ) -> Result<Vec<Member>, MemberError> {
        ctx.require_account(account)?;
        ctx.require(Scope::MembersRead)?;
        Ok(self.repo.members(account).await?)
    }

    /// Gives `user` the role `role` in `account` (`admin`; only owners touch owners).
    pub async fn change_role(
        &self,
        ctx: &AuthContext,
        account: AccountId,
        user: UserId,
        role: Role,
    ) -> Result<Member, MemberError> {
        ctx.require_account(account)?;
        ctx.require(Scope::Admin)?;
        match self
            .update(ctx, account, user, MemberUpdate::SetRole(role))
            .await?
        {
            Some(member) => Ok(member),
            None => Err(MemberError::NotFound),
        }
    }

    /// Removes `user` from `account` (`admin`; only owners remove owners). Anyone may leave:
    /// removing oneself needs no scope, as long as the account keeps an owner.
    pub async fn remove(
        &self,
        ctx: &AuthContext,
        account: AccountId,
        user: UserId,
    ) -> Result<(), MemberError> {
        ctx.require_account(account)?;
        if ctx.user_id != Some(user) || !matches!(ctx.credential, Credential::UserSession(_)) {
            ctx.require(Scope::Admin)?;
        }
        self.update(ctx, account, user, MemberUpdate::Remove)
            .await
            .map(|_| ())
    }

    async fn update(
        &self,
        ctx: &AuthContext,
        account: AccountId,
        user: UserId,
        update: MemberUpdate,
    ) -> Result<Option<Member>, MemberError> {
        let caller = caller_role(ctx);
        let leaving = update == MemberUpdate::Remove && ctx.user_id == Some(user);
        let now = self.clock.now();
        let audit_of = |before: &Member, after: Option<&Member>| match after {
            Some(after) => AuditEntry::by(ctx, AuditAction::MemberRoleChange, now)
                .target("user", user)
                .metadata(json!({ "from": before.role.as_str(), "to": after.role.as_str() })),
            None => AuditEntry::by(ctx, AuditAction::MemberRemove, now)
                .target("user", user)
                .metadata(json!({ "role": before.role.as_str(), "left": leaving })),
        };
        let mut current = self
            .repo
            .role_of(account, user)
            .await?
            .ok_or(MemberError::NotFound)?;
        for _ in 0..ATTEMPTS {
            let to = match update {
                MemberUpdate::SetRole(role) => role,
                MemberUpdate::Remove => current,
            };
            if !leaving && !caller.may_assign(current, to) {
                return Err(MemberError::OwnerRequired);
            }
            match self
                .repo
                .update_member(account, user, current, update, &audit_of)
                .await?
            {
                MemberOutcome::Changed(after) => {
                    if let Some(sessions) = &self.sessions {
                        sessions.forget_role(account, user);
                    }
                    tracing::info!(account.id = %account, user.id = %user, ?update, "member changed");
                    return Ok(after);
                }
                MemberOutcome::NotFound => return Err(MemberError::NotFound),
                MemberOutcome::LastOwner => return Err(MemberError::LastOwner),
                MemberOutcome::Stale(now_held) => current = now_held,
            }
        }
        Err(MemberError::Conflict)
    }
}

/// The role the caller acts with: a session's (capped) role, an admin token's
/// [`Role::Admin`].
pub(crate) fn caller_role(ctx: &AuthContext) -> Role {
    match ctx.role {
        Some(role) => role,
        None if ctx.scopes.allows(Scope::Admin) => Role::Admin,
        None => Role::Member,
    }
}
