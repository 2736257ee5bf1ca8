//! An account's admins' view of its authorization server (seed 003's `/admin` routes): the
//! dashboard, the tokens issued with their lineage, revocation with descendants,
//! introspection of a token's text, and a task with its audit trail and the chain of tasks
//! it descends from.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use d2_audit::{AuditFilter, AuditLog, AuditRecord};
use d2_kernel::{
    AccessError, AccountId, AuthContext, Clock, Code, ErrorCode, Page, PageError, PageRequest,
    Scope, StoreError,
};

use crate::error::GrantError;
use crate::issuer::{Introspected, TokenIssuer, Verification};
use crate::ports::OAuthTokenRepo;
use crate::token::{
    OAuthTokenId, RevokeScope, TokenCounts, TokenFilter, TokenRecord, is_task_id,
    revocation_reasons,
};

/// The windows the dashboard counts issuances and denials over: a name and its length.
pub const DASHBOARD_WINDOWS: [(&str, i64); 3] = [("1h", 3_600), ("24h", 86_400), ("7d", 604_800)];

/// How many tokens and audit records of one task the task view lists, and how many
/// ancestors it follows.
pub mod task_limits {
    pub const TOKENS: u32 = 100;
    pub const AUDIT: u32 = 100;
    pub const CHAIN: usize = 20;
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(transparent)]
    Page(#[from] PageError),
    #[error("no token of the account has this id")]
    NotFound,
    #[error("`task_id` must be 1 to 128 of A-Z a-z 0-9 - _ . : /")]
    InvalidTask,
    #[error(transparent)]
    Grant(#[from] GrantError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ErrorCode for AdminError {
    fn code(&self) -> Code {
        match self {
            AdminError::Access(error) => error.code(),
            AdminError::Page(error) => error.code(),
            AdminError::NotFound => Code::OAuthTokenNotFound,
            AdminError::InvalidTask => Code::InvalidQuery,
            AdminError::Grant(error) => error.code(),
            AdminError::Store(error) => error.code(),
        }
    }
}

/// The dashboard: counts at `at`, issuances and denials over each of [`DASHBOARD_WINDOWS`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dashboard {
    pub at: DateTime<Utc>,
    pub counts: TokenCounts,
}

/// A task: its tokens, newest first, and the tasks it descends from (`parent_task_id`,
/// nearest first), as its tokens name them.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskView {
    pub task_id: String,
    pub tokens: Vec<TokenRecord>,
    /// Whether the task has more tokens than listed.
    pub more_tokens: bool,
    /// The audit records of the task (its issuances, refreshes, reuses and introspection
    /// refusals), newest first.
    pub audit: Vec<AuditRecord>,
    /// Whether the task has more audit records than listed.
    pub more_audit: bool,
    pub chain: Vec<TaskLink>,
    /// Whether the chain goes on beyond [`task_limits::CHAIN`].
    pub chain_truncated: bool,
}

/// One task of a chain: its id, the parent it names, and how many of its tokens were seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskLink {
    pub task_id: String,
    pub parent_task_id: Option<String>,
    /// `false` when no token of the account carries this task (a parent named by a token
    /// request but never issued here).
    pub known: bool,
}

pub struct OAuthAdmin {
    issuer: Arc<TokenIssuer>,
    tokens: Arc<dyn OAuthTokenRepo>,
    audit: Arc<dyn AuditLog>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for OAuthAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthAdmin").finish_non_exhaustive()
    }
}

impl OAuthAdmin {
    pub fn new(
        issuer: Arc<TokenIssuer>,
        tokens: Arc<dyn OAuthTokenRepo>,
        audit: Arc<dyn AuditLog>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            issuer,
            tokens,
            audit,
            clock,
        }
    }

    pub async fn dashboard(&self, ctx: &AuthContext) -> Result<Dashboard, AdminError> {
        ctx.require(Scope::Admin)?;
        let now = self.clock.now();
        let since: Vec<DateTime<Utc>> = DASHBOARD_WINDOWS
            .iter()
            .map(|(_, seconds)| d2_kernel::earlier(now, Duration::seconds(*seconds)))
            .collect();
        let counts = self.tokens.counts(ctx.account_id, now, &since).await?;
        Ok(Dashboard { at: now, counts })
    }

    /// The account's tokens `filter` selects, newest first; `active` keeps those working
    /// now.
    pub async fn tokens(
        &self,
        ctx: &AuthContext,
        mut filter: TokenFilter,
        active: bool,
        page: &PageRequest,
    ) -> Result<Page<TokenRecord>, AdminError> {
        ctx.require(Scope::Admin)?;
        if filter
            .task_id
            .as_deref()
            .is_some_and(|task| !is_task_id(task))
        {
            return Err(AdminError::InvalidTask);
        }
        filter.active_at = active.then(|| self.clock.now());
        Ok(self.tokens.tokens(ctx.account_id, &filter, page).await?)
    }

    /// The token `id` with its lineage and what is wrong with them.
    pub async fn token(
        &self,
        ctx: &AuthContext,
        id: OAuthTokenId,
    ) -> Result<Verification, AdminError> {
        ctx.require(Scope::Admin)?;
        self.issuer
            .verify_id(ctx.account_id, id)
            .await?
            .ok_or(AdminError::NotFound)
    }

    /// Revokes the token `id` and every token derived from it (for a refresh token, the
    /// tokens its spending issued, and on down), audited `oauth.token_revoke` by the
    /// caller; returns the ids revoked (none when all were revoked or expired already).
    pub async fn revoke(
        &self,
        ctx: &AuthContext,
        id: OAuthTokenId,
    ) -> Result<Vec<OAuthTokenId>, AdminError> {
        ctx.require(Scope::Admin)?;
        if self.tokens.token(ctx.account_id, id).await?.is_none() {
            return Err(AdminError::NotFound);
        }
        Ok(self
            .issuer
            .revoke_scope(
                ctx.account_id,
                RevokeScope::WithDescendants(id),
                revocation_reasons::ADMIN,
                &ctx.actor(),
            )
            .await?)
    }

    /// RFC 7662's answer for the token `text` of the account, for its admins.
    pub async fn introspect(
        &self,
        ctx: &AuthContext,
        issuer: &str,
        text: &str,
    ) -> Result<Option<Introspected>, AdminError> {
        ctx.require(Scope::Admin)?;
        Ok(self.issuer.introspect(ctx.account_id, issuer, text).await?)
    }

    /// The task `task_id`: its tokens, its audit trail and the chain of tasks above it.
    pub async fn task(&self, ctx: &AuthContext, task_id: &str) -> Result<TaskView, AdminError> {
        ctx.require(Scope::Admin)?;
        if !is_task_id(task_id) {
            return Err(AdminError::InvalidTask);
        }
        let account = ctx.account_id;
        let page = self
            .task_tokens(account, task_id, task_limits::TOKENS)
            .await?;
        let trail = AuditFilter {
            task_id: Some(task_id.to_owned()),
            ..AuditFilter::default()
        };
        let audit = self
            .audit
            .search(account, &trail, &PageRequest::first(task_limits::AUDIT))
            .await?;
        let mut chain = Vec::new();
        let mut next = page.items.iter().find_map(|t| t.parent_task_id.clone());
        let mut chain_truncated = false;
        while let Some(parent) = next {
            if chain.len() >= task_limits::CHAIN {
                chain_truncated = true;
                break;
            }
            let seen = self.task_tokens(account, &parent, 1).await?;
            let parent_task_id = seen.items.first().and_then(|t| t.parent_task_id.clone());
            // A chain that comes back to a task already in it ends there.
            next = parent_task_id
                .clone()
                .filter(|p| p != task_id && !chain.iter().any(|l: &TaskLink| &l.task_id == p));
            chain.push(TaskLink {
                task_id: parent,
                parent_task_id,
                known: !seen.items.is_empty(),
            });
        }
        Ok(TaskView {
            task_id: task_id.to_owned(),
            more_tokens: page.next.is_some(),
            tokens: page.items,
            more_audit: audit.next.is_some(),
            audit: audit.items,
            chain,
            chain_truncated,
        })
    }

    async fn task_tokens(
        &self,
        account: AccountId,
        task_id: &str,
        limit: u32,
    ) -> Result<Page<TokenRecord>, AdminError> {
        let filter = TokenFilter {
            task_id: Some(task_id.to_owned()),
            ..TokenFilter::default()
        };
        Ok(self
            .tokens
            .tokens(account, &filter, &PageRequest::first(limit))
            .await?)
    }
}
