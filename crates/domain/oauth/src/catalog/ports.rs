//! What the catalog needs from storage. Every method is scoped by account. Errors:
//! [`StoreError`] only; not found and refusals are values. Every write commits its audit
//! record with it and announces `Change::Catalog(account)` in the same transaction.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use d2_audit::AuditEntry;
use d2_kernel::{AccountId, Page, PageRequest, StoreError};

use super::error::CatalogError;
use super::scope::{OAuthScope, ScopeChange};
use super::tool::{Tool, ToolFilter, ToolId, ToolSpec};
use crate::agent::AgentId;

/// Builds the audit record of a change from the tool as it is after the change.
pub type ToolAuditOf<'a> = &'a (dyn Fn(&Tool) -> AuditEntry + Sync);

/// Decides a change of an account's scopes, with its audit record, from the account's
/// scopes as they stand; or refuses it.
pub type ScopePlan<'a> =
    &'a (dyn Fn(&[OAuthScope]) -> Result<(ScopeChange, AuditEntry), CatalogError> + Sync);

/// What a write of a tool did.
#[derive(Clone, Debug, PartialEq)]
pub enum ToolWrite {
    /// The tool as stored now.
    Done(Box<Tool>),
    /// The account has no such tool; nothing written.
    NotFound,
    /// Another tool of the account has this name; nothing written.
    NameTaken,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindOutcome {
    Bound,
    /// Already bound: nothing written, nothing audited.
    AlreadyBound,
    AgentNotFound,
    ToolNotFound,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnbindOutcome {
    Unbound,
    NotBound,
    AgentNotFound,
    ToolNotFound,
}

#[async_trait]
pub trait ToolRepo: Send + Sync + 'static {
    /// Stores a new tool and `audit` at once; `NameTaken` when the account already has a
    /// tool of its name (also under concurrent creations: exactly one wins).
    async fn create_tool(&self, tool: &Tool, audit: &AuditEntry) -> Result<ToolWrite, StoreError>;

    async fn tool(&self, account: AccountId, id: ToolId) -> Result<Option<Tool>, StoreError>;

    async fn tool_named(&self, account: AccountId, name: &str) -> Result<Option<Tool>, StoreError>;

    /// The account's tools that `filter` admits, newest first.
    async fn tools(
        &self,
        account: AccountId,
        filter: &ToolFilter,
        page: &PageRequest,
    ) -> Result<Page<Tool>, StoreError>;

    /// Replaces the tool's spec (`updated_at` becomes `now`).
    async fn update_tool(
        &self,
        account: AccountId,
        id: ToolId,
        spec: &ToolSpec,
        now: DateTime<Utc>,
        audit_of: ToolAuditOf<'_>,
    ) -> Result<ToolWrite, StoreError>;

    /// Turns the tool on or off. A tool already so is answered unchanged, with no audit
    /// record. Never `NameTaken`.
    async fn set_tool_active(
        &self,
        account: AccountId,
        id: ToolId,
        active: bool,
        now: DateTime<Utc>,
        audit_of: ToolAuditOf<'_>,
    ) -> Result<ToolWrite, StoreError>;

    /// Deletes the tool and its bindings. `false` when the account has no such tool.
    async fn delete_tool(
        &self,
        account: AccountId,
        id: ToolId,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError>;

    /// Binds the account's tool to the account's agent.
    async fn bind_tool(
        &self,
        account: AccountId,
        agent: AgentId,
        tool: ToolId,
        now: DateTime<Utc>,
        audit: &AuditEntry,
    ) -> Result<BindOutcome, StoreError>;

    async fn unbind_tool(
        &self,
        account: AccountId,
        agent: AgentId,
        tool: ToolId,
        audit: &AuditEntry,
    ) -> Result<UnbindOutcome, StoreError>;

    /// The tools bound to the account's agent, by name; `None` when the account has no
    /// such agent.
    async fn agent_tools(
        &self,
        account: AccountId,
        agent: AgentId,
    ) -> Result<Option<Vec<Tool>>, StoreError>;
}

#[async_trait]
pub trait ScopeRepo: Send + Sync + 'static {
    /// The account's scopes, by name; `None` when its catalog was never seeded.
    async fn scopes(&self, account: AccountId) -> Result<Option<Vec<OAuthScope>>, StoreError>;

    /// Seeds the account's catalog, if it never was: stores `defaults` as its scopes, marks
    /// it seeded and writes `audit`, at once. `true` when this call seeded it; of
    /// concurrent calls exactly one does, and a catalog emptied later is never seeded again.
    async fn seed_scopes(
        &self,
        account: AccountId,
        defaults: &[OAuthScope],
        audit: &AuditEntry,
    ) -> Result<bool, StoreError>;

    /// Reads the account's scopes under the account's catalog lock (so concurrent changes
    /// are decided one after another, each seeing the one before), hands them to `plan`,
    /// and applies the change it decides with its audit record, at once. What `plan`
    /// refuses is answered as it is, nothing written. A `Create` of a name the account
    /// already has, or an `Update` or `Delete` of one it has not, writes nothing and is
    /// answered `ScopeNameTaken` or `ScopeNotFound`.
    async fn change_scopes(
        &self,
        account: AccountId,
        plan: ScopePlan<'_>,
    ) -> Result<Result<ScopeChange, CatalogError>, StoreError>;
}
