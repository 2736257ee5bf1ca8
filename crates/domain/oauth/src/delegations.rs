//! Managing an account's delegation grants (its admins), and checking one is still in
//! force for the token endpoint.
//!
//! A grant only narrows: its scopes, tools and resources must be held by its grantor and
//! usable by its grantee, both when it is made and at every use, so a grant outlives
//! neither a narrowing of its grantor nor the grantor's deactivation.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use d2_audit::{AuditAction, AuditEntry};
use d2_kernel::{AccountId, AuthContext, Clock, Page, PageRequest, Scope, StoreError};
use serde_json::json;

use crate::agent::{Agent, AgentId, AgentState};
use crate::delegation::{
    Delegation, DelegationFilter, DelegationId, DelegationRevocation, DelegationSpec,
    DelegationStatus, Grantor,
};
use crate::entitlement::{Entitlements, Holdings};
use crate::error::{DelegationError, GrantError};
use crate::issuer::TokenRecords;
use crate::ports::{DelegationRepo, DelegationRevoke, PrincipalRepo};
use crate::principal::PrincipalId;
use crate::rules::decision::PrincipalFacts;
use crate::service::AgentCache;
use crate::token::OAuthTokenId;

/// Why a grant is revoked.
pub mod delegation_revocation_reasons {
    /// An admin revoked it.
    pub const ADMIN: &str = "admin";
    /// Its grantor, a principal, withdrew it (their consent).
    pub const WITHDRAWN: &str = "withdrawn";
}

/// How audit records and grants name a principal acting for itself.
fn principal_actor(principal: PrincipalId) -> String {
    format!("principal:{principal}")
}

pub struct DelegationService {
    repo: Arc<dyn DelegationRepo>,
    agents: Arc<AgentCache>,
    principals: Arc<dyn PrincipalRepo>,
    entitlements: Arc<Entitlements>,
    records: Arc<TokenRecords>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for DelegationService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelegationService").finish_non_exhaustive()
    }
}

impl From<GrantError> for DelegationError {
    fn from(error: GrantError) -> Self {
        match error {
            GrantError::Store(error) => DelegationError::Store(error),
            GrantError::ClientGone => DelegationError::AgentNotFound,
            other => DelegationError::Store(StoreError::corrupt(other.to_string())),
        }
    }
}

/// What a grant names, as checked against its grantor and grantee.
struct Asked<'a> {
    scopes: &'a BTreeSet<String>,
    tools: Option<&'a BTreeSet<String>>,
    resources: &'a BTreeSet<String>,
}

/// The first of `asked` that `held` (when it bounds them) lacks.
fn first_missing<'a>(
    asked: impl IntoIterator<Item = &'a String>,
    held: Option<&BTreeSet<String>>,
) -> Option<&'a String> {
    let held = held?;
    asked.into_iter().find(|name| !held.contains(*name))
}

/// Refuses what `holdings` (of `whom`) do not cover.
fn within(asked: &Asked<'_>, holdings: &Holdings, whom: &str) -> Result<(), DelegationError> {
    let exceeds = |what: &str, name: &String| {
        Err(DelegationError::Exceeds(format!(
            "{whom} {what} `{}`",
            name.escape_debug()
        )))
    };
    if let Some(scope) = first_missing(asked.scopes, holdings.scopes.as_ref()) {
        return exceeds("may not have the scope", scope);
    }
    if let Some(tool) = first_missing(asked.tools.into_iter().flatten(), holdings.tools.as_ref()) {
        return exceeds("has no active tool", tool);
    }
    if let Some(resource) = first_missing(asked.resources, holdings.resources.as_ref()) {
        return exceeds("may not target", resource);
    }
    Ok(())
}

fn audit_metadata(delegation: &Delegation) -> serde_json::Value {
    json!({
        "grantor": {"type": delegation.grantor.kind(), "id": delegation.grantor.id()},
        "agent_id": delegation.agent_id,
        "scopes": delegation.scopes,
        "tools": delegation.tools,
        "resources": delegation.resources,
        "task_id": delegation.task_id,
        "max_depth": delegation.max_depth,
        "expires_at": delegation.expires_at,
    })
}

impl DelegationService {
    pub fn new(
        repo: Arc<dyn DelegationRepo>,
        agents: Arc<AgentCache>,
        principals: Arc<dyn PrincipalRepo>,
        entitlements: Arc<Entitlements>,
        records: Arc<TokenRecords>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            repo,
            agents,
            principals,
            entitlements,
            records,
            clock,
        }
    }

    /// Makes a grant in the caller's account (`admin`): its grantor (a principal, or an
    /// agent) must be active and hold what it names, and its agent may have it. Audited
    /// `delegation.create`.
    pub async fn create(
        &self,
        ctx: &AuthContext,
        spec: DelegationSpec,
    ) -> Result<Delegation, DelegationError> {
        ctx.require(Scope::Admin)?;
        self.make(ctx.account_id, spec, ctx.actor(), |action, at| {
            AuditEntry::by(ctx, action, at)
        })
        .await
    }

    /// A grant a principal makes themselves, approving what an agent asks on the consent
    /// page: checked as [`Self::create`] checks, audited `delegation.create` by
    /// `principal:<id>`.
    pub async fn create_as_principal(
        &self,
        account: AccountId,
        principal: PrincipalId,
        spec: DelegationSpec,
    ) -> Result<Delegation, DelegationError> {
        if spec.grantor != Grantor::Principal(principal) {
            return Err(DelegationError::invalid(
                "a principal grants only for itself",
            ));
        }
        self.make(account, spec, principal_actor(principal), |action, at| {
            AuditEntry::by_principal(account, principal, action, at)
        })
        .await
    }

    async fn make(
        &self,
        account: AccountId,
        spec: DelegationSpec,
        actor: String,
        entry: impl Fn(AuditAction, DateTime<Utc>) -> AuditEntry,
    ) -> Result<Delegation, DelegationError> {
        let spec = spec.validate()?;
        let asked = Asked {
            scopes: &spec.scopes,
            tools: spec.tools.as_ref(),
            resources: &spec.resources,
        };
        self.check_grantor(account, spec.grantor, &asked).await?;
        let grantee = self
            .agents
            .agent(account, spec.agent_id)
            .await?
            .ok_or(DelegationError::AgentNotFound)?;
        self.check_grantee(&grantee, &asked).await?;
        let now = self.clock.now();
        let delegation = Delegation::new(account, spec, actor, now);
        let entry = entry(AuditAction::DelegationCreate, now)
            .target("delegation", delegation.id)
            .metadata(audit_metadata(&delegation));
        if !self.repo.create_delegation(&delegation, &entry).await? {
            return Err(DelegationError::AgentNotFound);
        }
        tracing::info!(
            delegation.id = %delegation.id,
            account.id = %account,
            grantor = %delegation.grantor,
            agent.id = %delegation.agent_id,
            "delegation granted"
        );
        Ok(delegation)
    }

    pub async fn get(
        &self,
        ctx: &AuthContext,
        id: DelegationId,
    ) -> Result<Delegation, DelegationError> {
        ctx.require(Scope::Admin)?;
        self.repo
            .delegation(ctx.account_id, id)
            .await?
            .ok_or(DelegationError::NotFound)
    }

    /// The account's grants matching `filter`, newest first (`admin`).
    pub async fn list(
        &self,
        ctx: &AuthContext,
        filter: &DelegationFilter,
        page: &PageRequest,
    ) -> Result<Page<Delegation>, DelegationError> {
        ctx.require(Scope::Admin)?;
        Ok(self.repo.delegations(ctx.account_id, filter, page).await?)
    }

    /// Revokes the grant (`admin`); a grant revoked before is answered as it is. Audited
    /// `delegation.revoke`.
    pub async fn revoke(
        &self,
        ctx: &AuthContext,
        id: DelegationId,
    ) -> Result<Delegation, DelegationError> {
        ctx.require(Scope::Admin)?;
        self.revoke_by(
            ctx.account_id,
            id,
            delegation_revocation_reasons::ADMIN,
            ctx.actor(),
            |action, at| AuditEntry::by(ctx, action, at),
        )
        .await
    }

    /// A principal withdraws a grant it made (its consent to an agent): revoked as
    /// [`Self::revoke`] revokes, audited by `principal:<id>`. `NotFound` for a grant that
    /// is not the principal's.
    pub async fn withdraw(
        &self,
        account: AccountId,
        principal: PrincipalId,
        id: DelegationId,
    ) -> Result<Delegation, DelegationError> {
        let owned = self
            .repo
            .delegation(account, id)
            .await?
            .is_some_and(|grant| grant.grantor == Grantor::Principal(principal));
        if !owned {
            return Err(DelegationError::NotFound);
        }
        self.revoke_by(
            account,
            id,
            delegation_revocation_reasons::WITHDRAWN,
            principal_actor(principal),
            |action, at| AuditEntry::by_principal(account, principal, action, at),
        )
        .await
    }

    async fn revoke_by(
        &self,
        account: AccountId,
        id: DelegationId,
        reason: &str,
        by: String,
        entry: impl Fn(AuditAction, DateTime<Utc>) -> AuditEntry + Sync,
    ) -> Result<Delegation, DelegationError> {
        let now = self.clock.now();
        let revocation = DelegationRevocation {
            at: now,
            reason: reason.to_owned(),
            by,
        };
        let audit_of = |delegation: &Delegation, revoked: &[OAuthTokenId]| {
            entry(AuditAction::DelegationRevoke, now)
                .target("delegation", delegation.id)
                .metadata(json!({
                    "reason": revocation.reason,
                    "grantor": {"type": delegation.grantor.kind(), "id": delegation.grantor.id()},
                    "agent_id": delegation.agent_id,
                    "revoked_tokens": revoked,
                }))
        };
        match self
            .repo
            .revoke_delegation(account, id, &revocation, &audit_of)
            .await?
        {
            DelegationRevoke::Revoked(delegation) => {
                // The tokens revoked with it stop working here at once, elsewhere through
                // the change feed.
                self.records.forget_account(account);
                tracing::info!(delegation.id = %id, account.id = %account, "delegation revoked");
                Ok(*delegation)
            }
            DelegationRevoke::AlreadyRevoked(delegation) => Ok(*delegation),
            DelegationRevoke::NotFound => Err(DelegationError::NotFound),
        }
    }

    /// The grants `principal` made that are in force at `now`, newest first (its consents,
    /// at most `limit`).
    pub async fn granted_by(
        &self,
        account: AccountId,
        principal: PrincipalId,
        limit: u32,
    ) -> Result<Vec<Delegation>, DelegationError> {
        let filter = DelegationFilter {
            grantor: Some(Grantor::Principal(principal)),
            agent_id: None,
            active_at: Some(self.clock.now()),
        };
        let page = self
            .repo
            .delegations(account, &filter, &PageRequest::first(limit))
            .await?;
        Ok(page.items)
    }

    /// Whether `delegation` is in force at `now`: not revoked or expired, its grantor
    /// still active and holding what it names, its grantee still allowed it. The token
    /// endpoint asks at every use.
    pub async fn check_in_force(
        &self,
        delegation: &Delegation,
        now: DateTime<Utc>,
    ) -> Result<(), DelegationError> {
        match delegation.status(now) {
            DelegationStatus::Active => {}
            status => {
                return Err(DelegationError::Exceeds(format!(
                    "the delegation grant is {}",
                    status.as_str()
                )));
            }
        }
        let asked = Asked {
            scopes: &delegation.scopes,
            tools: delegation.tools.as_ref(),
            resources: &delegation.resources,
        };
        self.check_grantor(delegation.account_id, delegation.grantor, &asked)
            .await?;
        let grantee = self
            .agents
            .agent(delegation.account_id, delegation.agent_id)
            .await?
            .ok_or(DelegationError::AgentNotFound)?;
        self.check_grantee(&grantee, &asked).await
    }

    /// The grant `id` of `account`, whatever its state (the token endpoint's read).
    pub(crate) async fn grant(
        &self,
        account: AccountId,
        id: DelegationId,
    ) -> Result<Option<Delegation>, DelegationError> {
        Ok(self.repo.delegation(account, id).await?)
    }

    /// The newest grant from `grantor` to `agent` that is neither revoked nor expired at
    /// `now`, if any (a token exchange that names no grant).
    pub async fn newest_between(
        &self,
        account: AccountId,
        grantor: Grantor,
        agent: AgentId,
        now: DateTime<Utc>,
    ) -> Result<Option<Delegation>, DelegationError> {
        let filter = DelegationFilter {
            grantor: Some(grantor),
            agent_id: Some(agent),
            active_at: Some(now),
        };
        let page = self
            .repo
            .delegations(account, &filter, &PageRequest::first(1))
            .await?;
        Ok(page.items.into_iter().next())
    }

    /// The facts access rules read of the principal `id` of `account`, if it exists.
    pub(crate) async fn principal_facts(
        &self,
        account: AccountId,
        id: PrincipalId,
    ) -> Result<Option<PrincipalFacts>, DelegationError> {
        Ok(self
            .principals
            .principal(account, id)
            .await?
            .map(|principal| PrincipalFacts {
                id: principal.id,
                attributes: principal.spec.attributes,
            }))
    }

    async fn check_grantor(
        &self,
        account: AccountId,
        grantor: Grantor,
        asked: &Asked<'_>,
    ) -> Result<(), DelegationError> {
        let holdings = match grantor {
            Grantor::Principal(id) => {
                let principal = self
                    .principals
                    .principal(account, id)
                    .await?
                    .ok_or(DelegationError::PrincipalNotFound)?;
                if !principal.spec.active {
                    return Err(DelegationError::Exceeds(
                        "the principal is inactive: it has nothing to delegate".to_owned(),
                    ));
                }
                self.entitlements
                    .principal_holdings(account, asked.tools)
                    .await?
            }
            Grantor::Agent(id) => {
                let agent = self
                    .agents
                    .agent(account, id)
                    .await?
                    .ok_or(DelegationError::AgentNotFound)?;
                if agent.state != AgentState::Active {
                    return Err(DelegationError::Exceeds(
                        "the granting agent is not active: it has nothing to delegate".to_owned(),
                    ));
                }
                self.entitlements.agent_holdings(&agent).await?
            }
        };
        within(asked, &holdings, "the grantor")
    }

    async fn check_grantee(&self, agent: &Agent, asked: &Asked<'_>) -> Result<(), DelegationError> {
        let holdings = self.entitlements.agent_holdings(agent).await?;
        within(asked, &holdings, "the agent")
    }
}
