//! The tools of each account and the tools bound to its agents. What the token endpoint
//! asks (an agent's tools, a tool by name) is served from per-account caches that every
//! replica keeps coherent through the change feed.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use d2_audit::{AuditAction, AuditEntry};
use d2_kernel::{
    AccountId, AuthContext, CacheSettings, Change, ChangeSubscriber, Clock, CoherentCache, Page,
    PageRequest, Scope,
};
use serde_json::json;

use super::error::CatalogError;
use super::ports::{BindOutcome, ToolRepo, ToolWrite, UnbindOutcome};
use super::scopes::ScopeCatalog;
use super::tool::{Tool, ToolFilter, ToolId, ToolSpec};
use crate::agent::AgentId;

pub struct ToolService {
    repo: Arc<dyn ToolRepo>,
    scopes: Arc<ScopeCatalog>,
    clock: Arc<dyn Clock>,
    agent_tools: CoherentCache<(AccountId, AgentId), Arc<Vec<Tool>>>,
    by_name: CoherentCache<(AccountId, String), Option<Tool>>,
}

impl std::fmt::Debug for ToolService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolService")
            .field("agent_tools", &self.agent_tools)
            .field("by_name", &self.by_name)
            .finish_non_exhaustive()
    }
}

fn tool_audit(
    ctx: &AuthContext,
    action: AuditAction,
    tool: &Tool,
    now: DateTime<Utc>,
) -> AuditEntry {
    AuditEntry::by(ctx, action, now)
        .target("tool", tool.id)
        .metadata(json!({
            "name": tool.spec.name,
            "category": tool.spec.category,
            "required_scopes": tool.spec.required_scopes,
            "active": tool.active,
        }))
}

impl ToolService {
    pub fn new(
        repo: Arc<dyn ToolRepo>,
        scopes: Arc<ScopeCatalog>,
        clock: Arc<dyn Clock>,
        cache: CacheSettings,
    ) -> Self {
        Self {
            repo,
            scopes,
            clock,
            agent_tools: CoherentCache::new(cache),
            by_name: CoherentCache::new(cache),
        }
    }

    /// The tools bound to the account's agent (active or not: [`Tool::active`] says), by
    /// name. Served from memory once loaded; any change of the account's catalog through
    /// any replica drops it. `AgentNotFound` when the account has no such agent.
    pub async fn agent_tools(
        &self,
        account: AccountId,
        agent: AgentId,
    ) -> Result<Arc<Vec<Tool>>, CatalogError> {
        self.agent_tools
            .get_or_load(&(account, agent), || async {
                self.repo
                    .agent_tools(account, agent)
                    .await?
                    .map(Arc::new)
                    .ok_or(CatalogError::AgentNotFound)
            })
            .await
    }

    /// The account's tool called `name`, if any (active or not). Cached like
    /// [`ToolService::agent_tools`].
    pub async fn by_name(
        &self,
        account: AccountId,
        name: &str,
    ) -> Result<Option<Tool>, CatalogError> {
        if !super::text::is_tool_name(name) {
            return Ok(None);
        }
        self.by_name
            .get_or_load(&(account, name.to_owned()), || async {
                Ok::<_, CatalogError>(self.repo.tool_named(account, name).await?)
            })
            .await
    }

    fn forget(&self, account: AccountId) {
        self.agent_tools
            .invalidate_if(move |key, _| key.0 == account);
        self.by_name.invalidate_if(move |key, _| key.0 == account);
    }

    /// Scopes a tool requires must be scopes of the account's catalog.
    async fn check_required(
        &self,
        account: AccountId,
        spec: &ToolSpec,
    ) -> Result<(), CatalogError> {
        let known = self.scopes.known(account).await?;
        let unknown: Vec<String> = spec
            .required_scopes
            .iter()
            .filter(|s| !known.contains(s))
            .cloned()
            .collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(CatalogError::UnknownScopes(unknown))
        }
    }

    /// Adds a tool to the caller's account. Audited `tool.create`.
    pub async fn create(
        &self,
        ctx: &AuthContext,
        spec: ToolSpec,
        active: bool,
    ) -> Result<Tool, CatalogError> {
        ctx.require(Scope::Admin)?;
        let spec = spec.validate()?;
        self.check_required(ctx.account_id, &spec).await?;
        let now = self.clock.now();
        let tool = Tool::new(ctx.account_id, spec, active, now);
        let entry = tool_audit(ctx, AuditAction::ToolCreate, &tool, now);
        let written = self.repo.create_tool(&tool, &entry).await?;
        self.forget(ctx.account_id);
        match written {
            ToolWrite::Done(tool) => {
                tracing::info!(tool.id = %tool.id, account.id = %tool.account_id, "tool created");
                Ok(*tool)
            }
            ToolWrite::NameTaken => Err(CatalogError::ToolNameTaken(tool.spec.name)),
            ToolWrite::NotFound => Err(CatalogError::ToolNotFound),
        }
    }

    pub async fn get(&self, ctx: &AuthContext, id: ToolId) -> Result<Tool, CatalogError> {
        ctx.require(Scope::Admin)?;
        self.repo
            .tool(ctx.account_id, id)
            .await?
            .ok_or(CatalogError::ToolNotFound)
    }

    /// The caller's tools that `filter` admits, newest first.
    pub async fn list(
        &self,
        ctx: &AuthContext,
        filter: &ToolFilter,
        page: &PageRequest,
    ) -> Result<Page<Tool>, CatalogError> {
        ctx.require(Scope::Admin)?;
        Ok(self.repo.tools(ctx.account_id, filter, page).await?)
    }

    /// Replaces a tool's definition (its state stays). Audited `tool.update`.
    pub async fn update(
        &self,
        ctx: &AuthContext,
        id: ToolId,
        spec: ToolSpec,
    ) -> Result<Tool, CatalogError> {
        ctx.require(Scope::Admin)?;
        let spec = spec.validate()?;
        self.check_required(ctx.account_id, &spec).await?;
        let now = self.clock.now();
        let audit_of = |tool: &Tool| tool_audit(ctx, AuditAction::ToolUpdate, tool, now);
        let written = self
            .repo
            .update_tool(ctx.account_id, id, &spec, now, &audit_of)
            .await?;
        self.forget(ctx.account_id);
        match written {
            ToolWrite::Done(tool) => Ok(*tool),
            ToolWrite::NameTaken => Err(CatalogError::ToolNameTaken(spec.name)),
            ToolWrite::NotFound => Err(CatalogError::ToolNotFound),
        }
    }

    /// Turns a tool on or off (again: a no-op, not audited). Audited `tool.activate` or
    /// `tool.deactivate`.
    pub async fn set_active(
        &self,
        ctx: &AuthContext,
        id: ToolId,
        active: bool,
    ) -> Result<Tool, CatalogError> {
        ctx.require(Scope::Admin)?;
        let now = self.clock.now();
        let action = if active {
            AuditAction::ToolActivate
        } else {
            AuditAction::ToolDeactivate
        };
        let audit_of = |tool: &Tool| tool_audit(ctx, action, tool, now);
        let written = self
            .repo
            .set_tool_active(ctx.account_id, id, active, now, &audit_of)
            .await?;
        self.forget(ctx.account_id);
        match written {
            ToolWrite::Done(tool) => Ok(*tool),
            ToolWrite::NameTaken | ToolWrite::NotFound => Err(CatalogError::ToolNotFound),
        }
    }

    /// Deletes a tool; every agent it was bound to loses it. Audited `tool.delete`.
    pub async fn delete(&self, ctx: &AuthContext, id: ToolId) -> Result<(), CatalogError> {
        ctx.require(Scope::Admin)?;
        let now = self.clock.now();
        let entry = AuditEntry::by(ctx, AuditAction::ToolDelete, now).target("tool", id);
        let deleted = self.repo.delete_tool(ctx.account_id, id, &entry).await?;
        self.forget(ctx.account_id);
        if !deleted {
            return Err(CatalogError::ToolNotFound);
        }
        tracing::info!(tool.id = %id, account.id = %ctx.account_id, "tool deleted");
        Ok(())
    }

    /// The tools bound to one of the caller's agents.
    pub async fn bound(
        &self,
        ctx: &AuthContext,
        agent: AgentId,
    ) -> Result<Arc<Vec<Tool>>, CatalogError> {
        ctx.require(Scope::Admin)?;
        self.agent_tools(ctx.account_id, agent).await
    }

    /// Binds one of the caller's tools to one of the caller's agents: `true` when newly
    /// bound, `false` when it already was (nothing written). Audited `agent.tool_bind`.
    pub async fn bind(
        &self,
        ctx: &AuthContext,
        agent: AgentId,
        tool: ToolId,
    ) -> Result<bool, CatalogError> {
        ctx.require(Scope::Admin)?;
        let now = self.clock.now();
        let entry = AuditEntry::by(ctx, AuditAction::AgentToolBind, now)
            .target("agent", agent)
            .metadata(json!({"tool_id": tool.to_string()}));
        let outcome = self
            .repo
            .bind_tool(ctx.account_id, agent, tool, now, &entry)
            .await?;
        self.forget(ctx.account_id);
        match outcome {
            BindOutcome::Bound => Ok(true),
            BindOutcome::AlreadyBound => Ok(false),
            BindOutcome::AgentNotFound => Err(CatalogError::AgentNotFound),
            BindOutcome::ToolNotFound => Err(CatalogError::ToolNotFound),
        }
    }

    /// Unbinds a tool from one of the caller's agents. Audited `agent.tool_unbind`.
    pub async fn unbind(
        &self,
        ctx: &AuthContext,
        agent: AgentId,
        tool: ToolId,
    ) -> Result<(), CatalogError> {
        ctx.require(Scope::Admin)?;
        let now = self.clock.now();
        let entry = AuditEntry::by(ctx, AuditAction::AgentToolUnbind, now)
            .target("agent", agent)
            .metadata(json!({"tool_id": tool.to_string()}));
        let outcome = self
            .repo
            .unbind_tool(ctx.account_id, agent, tool, &entry)
            .await?;
        self.forget(ctx.account_id);
        match outcome {
            UnbindOutcome::Unbound => Ok(()),
            UnbindOutcome::NotBound => Err(CatalogError::ToolNotBound),
            UnbindOutcome::AgentNotFound => Err(CatalogError::AgentNotFound),
            UnbindOutcome::ToolNotFound => Err(CatalogError::ToolNotFound),
        }
    }
}

impl ChangeSubscriber for ToolService {
    fn on_change(&self, change: &Change) {
        match change {
            Change::Catalog(account) => self.forget(*account),
            Change::Resync => {
                self.agent_tools.invalidate_all();
                self.by_name.invalidate_all();
            }
            _ => {}
        }
    }
}
