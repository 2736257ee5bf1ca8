//! The catalog in memory, kept by `MemoryAgents` beside the agents it binds tools to: the
//! reference the contract suites hold the SQL stores to. An agent's bindings go with it
//! (they are read only for agents that still exist).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{MutexGuard, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use d2_audit::AuditEntry;
use d2_kernel::{AccountId, Page, PageRequest, StoreError};

use super::error::CatalogError;
use super::ports::{
    BindOutcome, ScopePlan, ScopeRepo, ToolAuditOf, ToolRepo, ToolWrite, UnbindOutcome,
};
use super::scope::{OAuthScope, ScopeChange};
use super::tool::{Tool, ToolFilter, ToolId, ToolSpec};
use crate::agent::AgentId;
use crate::memory::MemoryAgents;

#[derive(Debug, Default)]
pub struct CatalogRows {
    tools: Vec<Tool>,
    /// (account, agent, tool).
    bindings: BTreeSet<(AccountId, AgentId, ToolId)>,
    /// Seeded accounts, and their scopes by name.
    scopes: BTreeMap<AccountId, BTreeMap<String, OAuthScope>>,
}

impl MemoryAgents {
    fn catalog(&self) -> MutexGuard<'_, CatalogRows> {
        self.catalog.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn named_elsewhere(rows: &CatalogRows, tool: &Tool, name: &str) -> bool {
    rows.tools
        .iter()
        .any(|t| t.account_id == tool.account_id && t.id != tool.id && t.spec.name == name)
}

#[async_trait]
impl ToolRepo for MemoryAgents {
    async fn create_tool(&self, tool: &Tool, audit: &AuditEntry) -> Result<ToolWrite, StoreError> {
        let mut rows = self.catalog();
        if named_elsewhere(&rows, tool, &tool.spec.name) {
            return Ok(ToolWrite::NameTaken);
        }
        if rows.tools.iter().any(|t| t.id == tool.id) {
            return Err(StoreError::Conflict("tool id".into()));
        }
        rows.tools.push(tool.clone());
        self.audit.append(audit.clone());
        Ok(ToolWrite::Done(Box::new(tool.clone())))
    }

    async fn tool(&self, account: AccountId, id: ToolId) -> Result<Option<Tool>, StoreError> {
        Ok(self
            .catalog()
            .tools
            .iter()
            .find(|t| t.account_id == account && t.id == id)
            .cloned())
    }

    async fn tool_named(&self, account: AccountId, name: &str) -> Result<Option<Tool>, StoreError> {
        Ok(self
            .catalog()
            .tools
            .iter()
            .find(|t| t.account_id == account && t.spec.name == name)
            .cloned())
    }

    async fn tools(
        &self,
        account: AccountId,
        filter: &ToolFilter,
        page: &PageRequest,
    ) -> Result<Page<Tool>, StoreError> {
        let after = match page.after() {
            Some(cursor) => Some((
                cursor.at,
                cursor
                    .id_as::<ToolId>()
                    .map_err(|_| StoreError::corrupt("cursor id"))?,
            )),
            None => None,
        };
        let mut tools: Vec<Tool> = self
            .catalog()
            .tools
            .iter()
            .filter(|t| t.account_id == account && filter.matches(t))
            .filter(|t| after.is_none_or(|position| (t.created_at, t.id) < position))
            .cloned()
            .collect();
        tools.sort_by_key(|t| std::cmp::Reverse((t.created_at, t.id)));
        tools.truncate(
            usize::try_from(page.limit())
                .unwrap_or(usize::MAX)
                .saturating_add(1),
        );
        Ok(page.page_from(tools, |t| {
            d2_kernel::Cursor::new(t.created_at, t.id.to_string())
        }))
    }

    async fn update_tool(
        &self,
        account: AccountId,
        id: ToolId,
        spec: &ToolSpec,
        now: DateTime<Utc>,
        audit_of: ToolAuditOf<'_>,
    ) -> Result<ToolWrite, StoreError> {
        let mut rows = self.catalog();
        let Some(current) = rows
            .tools
            .iter()
            .find(|t| t.account_id == account && t.id == id)
            .cloned()
        else {
            return Ok(ToolWrite::NotFound);
        };
        if named_elsewhere(&rows, &current, &spec.name) {
            return Ok(ToolWrite::NameTaken);
        }
        let Some(tool) = rows.tools.iter_mut().find(|t| t.id == id) else {
            return Ok(ToolWrite::NotFound);
        };
        tool.spec = spec.clone();
        tool.updated_at = now;
        let tool = tool.clone();
        self.audit.append(audit_of(&tool));
        Ok(ToolWrite::Done(Box::new(tool)))
    }

    async fn set_tool_active(
        &self,
        account: AccountId,
        id: ToolId,
        active: bool,
        now: DateTime<Utc>,
        audit_of: ToolAuditOf<'_>,
    ) -> Result<ToolWrite, StoreError> {
        let mut rows = self.catalog();
        let Some(tool) = rows
            .tools
            .iter_mut()
            .find(|t| t.account_id == account && t.id == id)
        else {
            return Ok(ToolWrite::NotFound);
        };
        if tool.active != active {
            tool.active = active;
            tool.updated_at = now;
            self.audit.append(audit_of(tool));
        }
        Ok(ToolWrite::Done(Box::new(tool.clone())))
    }

    async fn delete_tool(
        &self,
        account: AccountId,
        id: ToolId,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let mut rows = self.catalog();
        let before = rows.tools.len();
        rows.tools
            .retain(|t| !(t.account_id == account && t.id == id));
        let deleted = rows.tools.len() < before;
        if deleted {
            rows.bindings.retain(|(_, _, tool)| *tool != id);
            self.audit.append(audit.clone());
        }
        Ok(deleted)
    }

    async fn bind_tool(
        &self,
        account: AccountId,
        agent: AgentId,
        tool: ToolId,
        _now: DateTime<Utc>,
        audit: &AuditEntry,
    ) -> Result<BindOutcome, StoreError> {
        let agents = self.agent_ids(account);
        let mut rows = self.catalog();
        if !agents.contains(&agent) {
            return Ok(BindOutcome::AgentNotFound);
        }
        if !rows
            .tools
            .iter()
            .any(|t| t.account_id == account && t.id == tool)
        {
            return Ok(BindOutcome::ToolNotFound);
        }
        // A binding left by an agent deleted since is gone with it: the ids never return.
        if !rows.bindings.insert((account, agent, tool)) {
            return Ok(BindOutcome::AlreadyBound);
        }
        self.audit.append(audit.clone());
        Ok(BindOutcome::Bound)
    }

    async fn unbind_tool(
        &self,
        account: AccountId,
        agent: AgentId,
        tool: ToolId,
        audit: &AuditEntry,
    ) -> Result<UnbindOutcome, StoreError> {
        let agents = self.agent_ids(account);
        let mut rows = self.catalog();
        if !agents.contains(&agent) {
            return Ok(UnbindOutcome::AgentNotFound);
        }
        if !rows
            .tools
            .iter()
            .any(|t| t.account_id == account && t.id == tool)
        {
            return Ok(UnbindOutcome::ToolNotFound);
        }
        if !rows.bindings.remove(&(account, agent, tool)) {
            return Ok(UnbindOutcome::NotBound);
        }
        self.audit.append(audit.clone());
        Ok(UnbindOutcome::Unbound)
    }

    async fn agent_tools(
        &self,
        account: AccountId,
        agent: AgentId,
    ) -> Result<Option<Vec<Tool>>, StoreError> {
        if !self.agent_ids(account).contains(&agent) {
            return Ok(None);
        }
        let rows = self.catalog();
        let mut tools: Vec<Tool> = rows
            .tools
            .iter()
            .filter(|t| t.account_id == account && rows.bindings.contains(&(account, agent, t.id)))
            .cloned()
            .collect();
        tools.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        Ok(Some(tools))
    }
}

#[async_trait]
impl ScopeRepo for MemoryAgents {
    async fn scopes(&self, account: AccountId) -> Result<Option<Vec<OAuthScope>>, StoreError> {
        Ok(self
            .catalog()
            .scopes
            .get(&account)
            .map(|scopes| scopes.values().cloned().collect()))
    }

    async fn seed_scopes(
        &self,
        account: AccountId,
        defaults: &[OAuthScope],
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let mut rows = self.catalog();
        if rows.scopes.contains_key(&account) {
            return Ok(false);
        }
        rows.scopes.insert(
            account,
            defaults
                .iter()
                .map(|s| (s.spec.name.clone(), s.clone()))
                .collect(),
        );
        self.audit.append(audit.clone());
        Ok(true)
    }

    async fn change_scopes(
        &self,
        account: AccountId,
        plan: ScopePlan<'_>,
    ) -> Result<Result<ScopeChange, CatalogError>, StoreError> {
        let mut rows = self.catalog();
        let scopes = rows.scopes.entry(account).or_default();
        let current: Vec<OAuthScope> = scopes.values().cloned().collect();
        let (change, audit) = match plan(&current) {
            Ok(planned) => planned,
            Err(refused) => return Ok(Err(refused)),
        };
        match &change {
            ScopeChange::Create(scope) => {
                if scopes.contains_key(scope.name()) {
                    return Ok(Err(CatalogError::ScopeNameTaken(scope.spec.name.clone())));
                }
                scopes.insert(scope.spec.name.clone(), scope.clone());
            }
            ScopeChange::Update(scope) => {
                let Some(stored) = scopes.get_mut(scope.name()) else {
                    return Ok(Err(CatalogError::ScopeNotFound(scope.spec.name.clone())));
                };
                *stored = scope.clone();
            }
            ScopeChange::Delete(name) => {
                if scopes.remove(name).is_none() {
                    return Ok(Err(CatalogError::ScopeNotFound(name.clone())));
                }
            }
        }
        self.audit.append(audit);
        Ok(Ok(change))
    }
}
