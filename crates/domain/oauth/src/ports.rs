//! What the agents domain needs from storage. Every method is scoped by account except
//! [`AgentRepo::client`] and [`AgentRepo::activate`], whose secret names the agent.
//! Errors: [`StoreError`] only; not found and refusals are values.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use d2_audit::AuditEntry;
use d2_kernel::{AccountId, Page, PageRequest, SecretDigest, StoreError};

use crate::agent::{Agent, AgentId, AgentSpec, AgentState, ClientSecrets, PendingRegistration};

/// Builds the audit record of a change from the agent it changed.
pub type AgentAuditOf<'a> = &'a (dyn Fn(&Agent) -> AuditEntry + Sync);

#[async_trait]
pub trait AgentRepo: Send + Sync + 'static {
    /// Stores a new pending agent with its registration, and `audit`, at once.
    async fn register(
        &self,
        agent: &Agent,
        registration: &PendingRegistration,
        audit: &AuditEntry,
    ) -> Result<(), StoreError>;

    /// Activates the pending agent whose registration digest is `registration`, if it has
    /// not expired at `now`: the agent becomes active with its first secret `secret`, and
    /// the registration is spent (single use, also under concurrent calls). `None` when no
    /// pending registration has this digest.
    async fn activate(
        &self,
        registration: &SecretDigest,
        secret: &SecretDigest,
        now: DateTime<Utc>,
        audit_of: AgentAuditOf<'_>,
    ) -> Result<Option<Agent>, StoreError>;

    async fn agent(&self, account: AccountId, id: AgentId) -> Result<Option<Agent>, StoreError>;

    /// The account's agents, newest first.
    async fn agents(
        &self,
        account: AccountId,
        page: &PageRequest,
    ) -> Result<Page<Agent>, StoreError>;

    /// Replaces the agent's spec (and its state, when `state` is given: active and disabled
    /// only, never back to pending). `None` when the account has no such agent.
    async fn update(
        &self,
        account: AccountId,
        id: AgentId,
        spec: &AgentSpec,
        state: Option<AgentState>,
        now: DateTime<Utc>,
        audit_of: AgentAuditOf<'_>,
    ) -> Result<Option<Agent>, StoreError>;

    /// Deletes the agent with its secrets and registration. `false` when the account has no
    /// such agent.
    async fn delete(
        &self,
        account: AccountId,
        id: AgentId,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError>;

    /// Makes `secret` the active agent's current secret, keeping the one it replaces until
    /// `previous_until`. `None` when the account has no such agent; the agent unchanged
    /// when it is not active.
    async fn rotate_secret(
        &self,
        account: AccountId,
        id: AgentId,
        secret: &SecretDigest,
        previous_until: DateTime<Utc>,
        audit_of: AgentAuditOf<'_>,
    ) -> Result<Option<Agent>, StoreError>;

    /// The agent a client id names, in any account, with its secrets (none before
    /// activation): what the token endpoint authenticates.
    async fn client(
        &self,
        id: AgentId,
    ) -> Result<Option<(Agent, Option<ClientSecrets>)>, StoreError>;
}
