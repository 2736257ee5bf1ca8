//! Delegation grants (seed 003): a principal or an agent lets another agent act for it,
//! with a subset of what it holds. What an admin writes is a [`DelegationSpec`], checked
//! for shape by [`DelegationSpec::validate`]; whether it stays within what the grantor
//! holds is the service's check, made at creation and again at every use.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use d2_kernel::AccountId;

use crate::agent::{AgentId, is_resource, is_scope_token};
use crate::catalog::text::is_tool_name;
use crate::error::DelegationError;
use crate::principal::PrincipalId;
use crate::token::is_task_id;

d2_kernel::typed_id!(
    /// A delegation grant of an account.
    DelegationId
);

/// The bounds of a grant.
pub mod limits {
    /// Scopes, tools or resources one grant names.
    pub const LIST: usize = 100;
    /// Resources one grant names.
    pub const RESOURCES: usize = 10;
    /// How many agents deep a grant may reach, its grantee the first.
    pub const MAX_DEPTH: std::ops::RangeInclusive<u8> = 1..=10;
    /// Seconds a grant may last.
    pub const SECONDS: std::ops::RangeInclusive<u32> = 60..=31_536_000;
    /// Seconds a grant lasts when the request says nothing.
    pub const DEFAULT_SECONDS: u32 = 86_400;
}

/// Who delegates: one of the account's principals (an end user), or one of its agents
/// handing part of its work to another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Grantor {
    Principal(PrincipalId),
    Agent(AgentId),
}

impl Grantor {
    /// `principal` or `agent`.
    pub const fn kind(self) -> &'static str {
        match self {
            Grantor::Principal(_) => "principal",
            Grantor::Agent(_) => "agent",
        }
    }

    pub fn id(self) -> uuid::Uuid {
        match self {
            Grantor::Principal(id) => *id.as_uuid(),
            Grantor::Agent(id) => *id.as_uuid(),
        }
    }
}

impl std::fmt::Display for Grantor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind(), self.id())
    }
}

/// What an admin asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DelegationSpec {
    pub grantor: Grantor,
    /// The agent that may act for the grantor.
    pub agent_id: AgentId,
    /// The scopes the agent may use for the grantor: at least one.
    pub scopes: BTreeSet<String>,
    /// The tools it may call for the grantor; `None`: any its scopes allow.
    pub tools: Option<BTreeSet<String>>,
    /// The RFC 8707 resources its tokens may target for the grantor; empty: any the agent
    /// may target.
    pub resources: BTreeSet<String>,
    /// The task the grant is for; `None`: any.
    pub task_id: Option<String>,
    /// How many agents deep the delegation may reach: 1, the grantee only; 2, the grantee
    /// and one agent it delegates to; and so on.
    pub max_depth: u8,
    pub expires_in_seconds: u32,
}

impl DelegationSpec {
    /// The spec, or the first rule of shape it breaks.
    pub fn validate(self) -> Result<Self, DelegationError> {
        if self.grantor == Grantor::Agent(self.agent_id) {
            return Err(DelegationError::invalid(
                "an agent cannot delegate to itself",
            ));
        }
        if self.scopes.is_empty() || self.scopes.len() > limits::LIST {
            return Err(DelegationError::invalid(format!(
                "`scopes` must name 1 to {} scopes",
                limits::LIST
            )));
        }
        if let Some(bad) = self.scopes.iter().find(|s| !is_scope_token(s)) {
            return Err(DelegationError::invalid(format!(
                "`{}` is not a scope token (RFC 6749 §3.3)",
                bad.escape_debug()
            )));
        }
        if let Some(tools) = &self.tools {
            if tools.len() > limits::LIST {
                return Err(DelegationError::invalid(format!(
                    "`tools` names at most {} tools",
                    limits::LIST
                )));
            }
            if let Some(bad) = tools.iter().find(|t| !is_tool_name(t)) {
                return Err(DelegationError::invalid(format!(
                    "`{}` is not a tool name",
                    bad.escape_debug()
                )));
            }
        }
        if self.resources.len() > limits::RESOURCES {
            return Err(DelegationError::invalid(format!(
                "`resources` names at most {} resources",
                limits::RESOURCES
            )));
        }
        if let Some(bad) = self.resources.iter().find(|r| !is_resource(r)) {
            return Err(DelegationError::invalid(format!(
                "`{}` is not a resource: an absolute URI without a fragment (RFC 8707)",
                bad.escape_debug()
            )));
        }
        if self
            .task_id
            .as_deref()
            .is_some_and(|task| !is_task_id(task))
        {
            return Err(DelegationError::invalid(
                "`task_id` must be 1 to 128 of `A-Z a-z 0-9 - _ . : /`",
            ));
        }
        if !limits::MAX_DEPTH.contains(&self.max_depth) {
            return Err(DelegationError::invalid(format!(
                "`max_depth` must be {} to {}",
                limits::MAX_DEPTH.start(),
                limits::MAX_DEPTH.end()
            )));
        }
        if !limits::SECONDS.contains(&self.expires_in_seconds) {
            return Err(DelegationError::invalid(format!(
                "`expires_in` must be {} to {} seconds",
                limits::SECONDS.start(),
                limits::SECONDS.end()
            )));
        }
        Ok(self)
    }
}

/// A delegation grant as stored: never changed once made, except by its revocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delegation {
    pub id: DelegationId,
    pub account_id: AccountId,
    pub grantor: Grantor,
    pub agent_id: AgentId,
    pub scopes: BTreeSet<String>,
    pub tools: Option<BTreeSet<String>>,
    pub resources: BTreeSet<String>,
    pub task_id: Option<String>,
    pub max_depth: u8,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Who made it, as audit records name an actor.
    pub created_by: String,
    pub revocation: Option<DelegationRevocation>,
}

/// When, why and by whom a grant was revoked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DelegationRevocation {
    pub at: DateTime<Utc>,
    pub reason: String,
    pub by: String,
}

/// Where a grant stands at an instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DelegationStatus {
    Active,
    Expired,
    Revoked,
}

impl DelegationStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            DelegationStatus::Active => "active",
            DelegationStatus::Expired => "expired",
            DelegationStatus::Revoked => "revoked",
        }
    }
}

impl Delegation {
    pub fn new(
        account_id: AccountId,
        spec: DelegationSpec,
        created_by: String,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id: DelegationId::random(),
            account_id,
            grantor: spec.grantor,
            agent_id: spec.agent_id,
            scopes: spec.scopes,
            tools: spec.tools,
            resources: spec.resources,
            task_id: spec.task_id,
            max_depth: spec.max_depth,
            created_at: now,
            expires_at: d2_kernel::later(
                now,
                Duration::seconds(i64::from(spec.expires_in_seconds)),
            ),
            created_by,
            revocation: None,
        }
    }

    pub fn status(&self, now: DateTime<Utc>) -> DelegationStatus {
        if self.revocation.is_some() {
            DelegationStatus::Revoked
        } else if self.expires_at <= now {
            DelegationStatus::Expired
        } else {
            DelegationStatus::Active
        }
    }
}

/// Which of an account's grants to list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DelegationFilter {
    /// Those this principal or agent granted.
    pub grantor: Option<Grantor>,
    /// Those granted to this agent.
    pub agent_id: Option<AgentId>,
    /// Only those working at this instant (not revoked, not expired).
    pub active_at: Option<DateTime<Utc>>,
}
