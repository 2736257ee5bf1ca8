//! The in-memory agents store: the reference the contract suites hold the SQL stores to,
//! and the store of the domain's unit tests.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use d2_audit::AuditEntry;
use d2_audit::memory::MemoryAuditLog;
use d2_kernel::{AccountId, Page, PageRequest, SecretDigest, StoreError};

use crate::agent::{Agent, AgentId, AgentSpec, AgentState, ClientSecrets, PendingRegistration};
use crate::ports::{AgentAuditOf, AgentRepo};

#[derive(Clone, Debug)]
struct Row {
    agent: Agent,
    registration: Option<PendingRegistration>,
    secrets: Option<ClientSecrets>,
}

/// Agents in memory, with their account's catalog (tools, scopes, bindings: see
/// `catalog::memory`); each method is one critical section, its "transaction", which
/// writes its audit record too.
#[derive(Debug)]
pub struct MemoryAgents {
    rows: Mutex<Vec<Row>>,
    pub(crate) audit: Arc<MemoryAuditLog>,
    pub(crate) catalog: Mutex<crate::catalog::memory::CatalogRows>,
}

impl MemoryAgents {
    pub fn new(audit: Arc<MemoryAuditLog>) -> Self {
        Self {
            rows: Mutex::new(Vec::new()),
            audit,
            catalog: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Row>> {
        self.rows.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The ids of the account's agents (what the catalog's bindings may name).
    pub(crate) fn agent_ids(&self, account: AccountId) -> Vec<AgentId> {
        self.lock()
            .iter()
            .filter(|r| r.agent.account_id == account)
            .map(|r| r.agent.id)
            .collect()
    }
}

#[async_trait]
impl AgentRepo for MemoryAgents {
    async fn register(
        &self,
        agent: &Agent,
        registration: &PendingRegistration,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let mut rows = self.lock();
        if rows.iter().any(|r| r.agent.id == agent.id) {
            return Err(StoreError::Conflict("agent id".into()));
        }
        rows.push(Row {
            agent: agent.clone(),
            registration: Some(registration.clone()),
            secrets: None,
        });
        self.audit.append(audit.clone());
        Ok(())
    }

    async fn activate(
        &self,
        registration: &SecretDigest,
        secret: &SecretDigest,
        now: DateTime<Utc>,
        audit_of: AgentAuditOf<'_>,
    ) -> Result<Option<Agent>, StoreError> {
        let mut rows = self.lock();
        let Some(row) = rows.iter_mut().find(|r| {
            r.registration
                .as_ref()
                .is_some_and(|p| p.digest == *registration && now < p.expires_at)
        }) else {
            return Ok(None);
        };
        row.registration = None;
        row.secrets = Some(ClientSecrets {
            current: *secret,
            previous: None,
        });
        row.agent.state = AgentState::Active;
        row.agent.activated_at = Some(now);
        row.agent.updated_at = now;
        self.audit.append(audit_of(&row.agent));
        Ok(Some(row.agent.clone()))
    }

    async fn agent(&self, account: AccountId, id: AgentId) -> Result<Option<Agent>, StoreError> {
        Ok(self
            .lock()
            .iter()
            .find(|r| r.agent.account_id == account && r.agent.id == id)
            .map(|r| r.agent.clone()))
    }

    async fn agents(
        &self,
        account: AccountId,
        page: &PageRequest,
    ) -> Result<Page<Agent>, StoreError> {
        let after = match page.after() {
            Some(cursor) => Some((
                cursor.at,
                cursor
                    .id_as::<AgentId>()
                    .map_err(|_| StoreError::corrupt("cursor id"))?,
            )),
            None => None,
        };
        let mut agents: Vec<Agent> = self
            .lock()
            .iter()
            .map(|r| &r.agent)
            .filter(|a| a.account_id == account)
            .filter(|a| after.is_none_or(|position| (a.created_at, a.id) < position))
            .cloned()
            .collect();
        agents.sort_by_key(|a| std::cmp::Reverse((a.created_at, a.id)));
        agents.truncate(
            usize::try_from(page.limit())
                .unwrap_or(usize::MAX)
                .saturating_add(1),
        );
        Ok(page.page_from(agents, |a| {
            d2_kernel::Cursor::new(a.created_at, a.id.to_string())
        }))
    }

    async fn update(
        &self,
        account: AccountId,
        id: AgentId,
        spec: &AgentSpec,
        state: Option<AgentState>,
        now: DateTime<Utc>,
        audit_of: AgentAuditOf<'_>,
    ) -> Result<Option<Agent>, StoreError> {
        let mut rows = self.lock();
        let Some(row) = rows
            .iter_mut()
            .find(|r| r.agent.account_id == account && r.agent.id == id)
        else {
            return Ok(None);
        };
        row.agent.spec = spec.clone();
        if let Some(state) = state
            && row.agent.state != AgentState::Pending
            && state != AgentState::Pending
        {
            row.agent.state = state;
        }
        row.agent.updated_at = now;
        self.audit.append(audit_of(&row.agent));
        Ok(Some(row.agent.clone()))
    }

    async fn delete(
        &self,
        account: AccountId,
        id: AgentId,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let mut rows = self.lock();
        let before = rows.len();
        rows.retain(|r| !(r.agent.account_id == account && r.agent.id == id));
        let deleted = rows.len() < before;
        if deleted {
            self.audit.append(audit.clone());
        }
        Ok(deleted)
    }

    async fn rotate_secret(
        &self,
        account: AccountId,
        id: AgentId,
        secret: &SecretDigest,
        previous_until: DateTime<Utc>,
        audit_of: AgentAuditOf<'_>,
    ) -> Result<Option<Agent>, StoreError> {
        let mut rows = self.lock();
        let Some(row) = rows
            .iter_mut()
            .find(|r| r.agent.account_id == account && r.agent.id == id)
        else {
            return Ok(None);
        };
        if row.agent.state == AgentState::Active
            && let Some(secrets) = row.secrets.as_mut()
        {
            secrets.previous = Some((secrets.current, previous_until));
            secrets.current = *secret;
            self.audit.append(audit_of(&row.agent));
        }
        Ok(Some(row.agent.clone()))
    }

    async fn client(
        &self,
        id: AgentId,
    ) -> Result<Option<(Agent, Option<ClientSecrets>)>, StoreError> {
        Ok(self
            .lock()
            .iter()
            .find(|r| r.agent.id == id)
            .map(|r| (r.agent.clone(), r.secrets.clone())))
    }
}

#[async_trait]
impl d2_audit::AuditLog for MemoryAgents {
    async fn search(
        &self,
        account_id: AccountId,
        filter: &d2_audit::AuditFilter,
        page: &PageRequest,
    ) -> Result<Page<d2_audit::AuditRecord>, StoreError> {
        d2_audit::AuditLog::search(self.audit.as_ref(), account_id, filter, page).await
    }
}
