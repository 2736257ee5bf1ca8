//! Managing an account's principals (its admins), and reading one for the token endpoint.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use d2_audit::{AuditAction, AuditEntry};
use d2_kernel::{AccountId, AuthContext, Clock, Page, PageRequest, Scope};
use serde_json::json;

use crate::error::PrincipalError;
use crate::issuer::TokenRecords;
use crate::ports::{PrincipalRepo, PrincipalWrite};
use crate::principal::{Principal, PrincipalId, PrincipalSpec};
use crate::token::OAuthTokenId;

pub struct PrincipalService {
    repo: Arc<dyn PrincipalRepo>,
    records: Arc<TokenRecords>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for PrincipalService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrincipalService").finish_non_exhaustive()
    }
}

/// The record of `action` on `principal` by `ctx`: its username and state (never its
/// attributes, which may be personal data).
fn audit(
    ctx: &AuthContext,
    action: AuditAction,
    principal: &Principal,
    now: DateTime<Utc>,
) -> AuditEntry {
    AuditEntry::by(ctx, action, now)
        .target("principal", principal.id)
        .metadata(json!({
            "username": principal.spec.username,
            "active": principal.spec.active,
        }))
}

fn written(outcome: PrincipalWrite) -> Result<Principal, PrincipalError> {
    match outcome {
        PrincipalWrite::Written(principal) => Ok(*principal),
        PrincipalWrite::UsernameTaken => Err(PrincipalError::UsernameTaken),
        PrincipalWrite::NotFound => Err(PrincipalError::NotFound),
    }
}

impl PrincipalService {
    pub fn new(
        repo: Arc<dyn PrincipalRepo>,
        records: Arc<TokenRecords>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            repo,
            records,
            clock,
        }
    }

    /// Creates a principal in the caller's account (`admin`). Audited `principal.create`.
    pub async fn create(
        &self,
        ctx: &AuthContext,
        spec: PrincipalSpec,
    ) -> Result<Principal, PrincipalError> {
        ctx.require(Scope::Admin)?;
        let spec = spec.validate()?;
        let principal = Principal::new(ctx.account_id, spec, self.clock.now());
        let entry = audit(
            ctx,
            AuditAction::PrincipalCreate,
            &principal,
            principal.created_at,
        );
        let principal = written(self.repo.create_principal(&principal, &entry).await?)?;
        tracing::info!(principal.id = %principal.id, account.id = %principal.account_id, "principal created");
        Ok(principal)
    }

    pub async fn get(
        &self,
        ctx: &AuthContext,
        id: PrincipalId,
    ) -> Result<Principal, PrincipalError> {
        ctx.require(Scope::Admin)?;
        self.repo
            .principal(ctx.account_id, id)
            .await?
            .ok_or(PrincipalError::NotFound)
    }

    /// The account's principals, newest first; only the active (or inactive) ones when
    /// `active` says so.
    pub async fn list(
        &self,
        ctx: &AuthContext,
        active: Option<bool>,
        page: &PageRequest,
    ) -> Result<Page<Principal>, PrincipalError> {
        ctx.require(Scope::Admin)?;
        Ok(self.repo.principals(ctx.account_id, active, page).await?)
    }

    /// Replaces the principal's username, email, display name, attributes and state.
    /// Deactivating it revokes every token acting for it, in the same transaction.
    /// Audited `principal.update` (naming the tokens revoked).
    pub async fn update(
        &self,
        ctx: &AuthContext,
        id: PrincipalId,
        spec: PrincipalSpec,
    ) -> Result<Principal, PrincipalError> {
        ctx.require(Scope::Admin)?;
        let spec = spec.validate()?;
        let now = self.clock.now();
        let audit_of = |principal: &Principal, revoked: &[OAuthTokenId]| {
            let entry = audit(ctx, AuditAction::PrincipalUpdate, principal, now);
            if revoked.is_empty() {
                entry
            } else {
                entry.metadata(json!({
                    "username": principal.spec.username,
                    "active": principal.spec.active,
                    "revoked_tokens": revoked,
                }))
            }
        };
        let outcome = self
            .repo
            .update_principal(ctx.account_id, id, &spec, now, &audit_of)
            .await?;
        if !spec.active {
            // Its tokens, revoked with it, stop working here at once, elsewhere through the
            // change feed.
            self.records.forget_account(ctx.account_id);
        }
        written(outcome)
    }

    /// Deletes the principal. Audited `principal.delete`.
    pub async fn delete(&self, ctx: &AuthContext, id: PrincipalId) -> Result<(), PrincipalError> {
        ctx.require(Scope::Admin)?;
        let entry = AuditEntry::by(ctx, AuditAction::PrincipalDelete, self.clock.now())
            .target("principal", id);
        if !self
            .repo
            .delete_principal(ctx.account_id, id, &entry)
            .await?
        {
            return Err(PrincipalError::NotFound);
        }
        tracing::info!(principal.id = %id, account.id = %ctx.account_id, "principal deleted");
        Ok(())
    }

    /// The principal `id` of `account`, whatever its state (the token endpoint's read:
    /// it refuses inactive principals itself). No credential check: the caller has
    /// authenticated the agent of `account`.
    pub async fn principal(
        &self,
        account: AccountId,
        id: PrincipalId,
    ) -> Result<Option<Principal>, PrincipalError> {
        Ok(self.repo.principal(account, id).await?)
    }
}
