//! What an agent may be granted, and whether a token may call a tool: the agent's allowed
//! scopes expanded through the account's scope catalog, the tools bound to it, and the
//! account's access rules, read together at issuance and by the tool-access check.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use d2_kernel::{AccountId, StoreError};

use crate::AccessRules;
use crate::agent::Agent;
use crate::catalog::error::CatalogError;
use crate::catalog::scope::KnownScopes;
use crate::catalog::scopes::ScopeCatalog;
use crate::catalog::tools::ToolService;
use crate::error::{AccessRuleError, GrantError};
use crate::rules::decision::{AccessRequest, AgentFacts, PrincipalFacts, Reason, RuleRef};
use crate::token::{GrantType, TokenRecord, token_limits};

/// The catalog and the rules, as the token endpoint and the tool-access check read them.
#[derive(Debug)]
pub struct Entitlements {
    scopes: Arc<ScopeCatalog>,
    tools: Arc<ToolService>,
    rules: Arc<AccessRules>,
}

/// A name and what it says of itself.
pub type Described = (String, Option<String>);

/// What a consent page lists: the scopes asked and the tools they reach.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConsentItems {
    pub scopes: Vec<Described>,
    pub tools: Vec<Described>,
}

/// What a grant asks for, beside the agent.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ask<'a> {
    /// The `scope` parameter, as sent.
    pub scope: Option<&'a str>,
    /// On a refresh, the scopes of the grant being refreshed: nothing beyond them.
    pub ceiling: Option<&'a [String]>,
    pub audience: &'a [String],
    pub grant_type: GrantType,
    pub task_id: &'a str,
    pub parent_task_id: Option<&'a str>,
    pub now: DateTime<Utc>,
    /// What the delegation grants of the token's chain add, if it acts for someone.
    pub delegated: &'a Delegated,
}

/// What a delegated token's grants add to a decision: the principal it acts for (rules
/// read `principal.*`), and the tools every grant of its chain allows.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Delegated {
    pub principal: Option<PrincipalFacts>,
    /// `None`: any tool the token's scopes allow.
    pub tools: Option<BTreeSet<String>>,
}

impl Delegated {
    fn allows_tool(&self, name: &str) -> bool {
        self.tools.as_ref().is_none_or(|tools| tools.contains(name))
    }
}

/// The scopes a grant gets, and the rule that decided them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Granted {
    pub scopes: Vec<String>,
    pub decided_by: Option<RuleRef>,
    pub reason: Reason,
}

/// What a grantor holds, and so may delegate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Holdings {
    /// `None`: every scope.
    pub scopes: Option<BTreeSet<String>>,
    /// `None`: every tool.
    pub tools: Option<BTreeSet<String>>,
    /// `None`: every resource.
    pub resources: Option<BTreeSet<String>>,
}

/// Whether a token may call a tool, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolAccess {
    pub allowed: bool,
    pub reason: ToolAccessReason,
    /// The access rule that decided, when one did.
    pub decided_by: Option<RuleRef>,
    /// The scopes the tool requires that the token does not carry (after the rules).
    pub missing_scopes: Vec<String>,
}

/// Why a tool may or may not be called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ToolAccessReason {
    /// Bound to the agent, active, its scopes carried, no rule against it.
    Allowed,
    /// The account has no active tool of this name.
    UnknownTool,
    /// The tool exists but is deactivated.
    ToolInactive,
    /// The tool is not bound to the token's agent.
    NotBound,
    /// The token lacks scopes the tool requires.
    MissingScopes,
    /// An access rule denied it, or narrowed away a scope it requires.
    DeniedByRule,
    /// The token acts for someone, and its delegation grants do not (or no longer) let it
    /// call this tool.
    NotDelegated,
}

impl ToolAccess {
    /// The answer for a token whose delegation grants are no longer in force.
    pub(crate) fn not_delegated() -> Self {
        Self {
            allowed: false,
            reason: ToolAccessReason::NotDelegated,
            decided_by: None,
            missing_scopes: Vec::new(),
        }
    }
}

impl ToolAccessReason {
    pub const fn as_str(self) -> &'static str {
        match self {
            ToolAccessReason::Allowed => "allowed",
            ToolAccessReason::UnknownTool => "unknown_tool",
            ToolAccessReason::ToolInactive => "tool_inactive",
            ToolAccessReason::NotBound => "not_bound",
            ToolAccessReason::MissingScopes => "missing_scopes",
            ToolAccessReason::DeniedByRule => "denied_by_rule",
            ToolAccessReason::NotDelegated => "not_delegated",
        }
    }
}

impl From<CatalogError> for GrantError {
    fn from(error: CatalogError) -> Self {
        match error {
            CatalogError::Store(error) => GrantError::Store(error),
            // The agent was deleted while its token was being decided.
            CatalogError::AgentNotFound => GrantError::ClientGone,
            other => GrantError::Store(StoreError::corrupt(other.to_string())),
        }
    }
}

impl From<AccessRuleError> for GrantError {
    fn from(error: AccessRuleError) -> Self {
        match error {
            AccessRuleError::Store(error) => GrantError::Store(error),
            other => GrantError::Store(StoreError::corrupt(other.to_string())),
        }
    }
}

/// `names` and every scope the catalog says they imply; a name the catalog does not hold
/// stands for itself alone.
fn closure<'a>(known: &KnownScopes, names: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    let mut closed = BTreeSet::new();
    for name in names {
        match known.get(name) {
            Some(scope) => closed.extend(scope.expanded.iter().cloned()),
            None => {
                closed.insert(name.to_owned());
            }
        }
    }
    closed
}

impl Entitlements {
    pub fn new(
        scopes: Arc<ScopeCatalog>,
        tools: Arc<ToolService>,
        rules: Arc<AccessRules>,
    ) -> Self {
        Self {
            scopes,
            tools,
            rules,
        }
    }

    /// The scopes `agent` gets for `ask`: those asked (else every scope it may have, or on
    /// a refresh those of the grant), each one the agent may have directly or through the
    /// scopes its allowed ones imply, expanded with what they imply, then decided by the
    /// account's access rules (for each resource of the audience: a denial by any denies,
    /// narrowings add up).
    pub(crate) async fn grant(&self, agent: &Agent, ask: Ask<'_>) -> Result<Granted, GrantError> {
        let known = self.scopes.known(agent.account_id).await?;
        let allowed = closure(&known, agent.spec.scopes.iter().map(String::as_str));
        let within = |scope: &str| {
            allowed.contains(scope) && ask.ceiling.is_none_or(|c| c.iter().any(|s| s == scope))
        };
        let asked: Vec<&str> = match ask.scope.map(str::trim).filter(|s| !s.is_empty()) {
            None => match ask.ceiling {
                Some(ceiling) => ceiling.iter().map(String::as_str).collect(),
                None => agent.spec.scopes.iter().map(String::as_str).collect(),
            },
            Some(text) => {
                let asked: Vec<&str> = text.split(' ').filter(|s| !s.is_empty()).collect();
                if asked.len() > token_limits::SCOPES {
                    return Err(GrantError::Scope(format!(
                        "at most {} scopes per request",
                        token_limits::SCOPES
                    )));
                }
                if let Some(refused) = asked.iter().find(|s| !within(s)) {
                    return Err(GrantError::Scope(format!(
                        "`{}` is not a scope this client may have{}",
                        refused.escape_debug(),
                        if ask.ceiling.is_some() {
                            " on this grant"
                        } else {
                            ""
                        }
                    )));
                }
                asked
            }
        };
        let mut scopes: BTreeSet<String> = closure(&known, asked);
        scopes.retain(|scope| within(scope));
        let mut tools = self.usable_tools(agent, &scopes).await?;
        tools.retain(|tool| ask.delegated.allows_tool(tool));
        let mut decided_by = None;
        let mut reason = Reason::NoRuleMatched;
        for resource in ask.audience {
            let request = AccessRequest {
                agent: facts(agent),
                principal: ask.delegated.principal.clone(),
                scopes: scopes.clone(),
                tools: tools.clone(),
                resource: Some(resource.clone()),
                grant_type: ask.grant_type.as_str().to_owned(),
                task_id: Some(ask.task_id.to_owned()),
                parent_task_id: ask.parent_task_id.map(str::to_owned),
                now: ask.now,
            };
            let decision = self.rules.decide(agent.account_id, &request).await?;
            if !decision.allowed {
                return Err(GrantError::Denied {
                    message: match &decision.decided_by {
                        Some(rule) => format!(
                            "the access rule `{}` refuses this request ({})",
                            rule.name,
                            decision.reason.as_str()
                        ),
                        None => "the access rules refuse this request".to_owned(),
                    },
                    rule: decision.decided_by,
                });
            }
            if decision.decided_by.is_some() {
                decided_by = decision.decided_by;
                reason = decision.reason;
            }
            scopes = decision.scopes;
        }
        Ok(Granted {
            scopes: scopes.into_iter().collect(),
            decided_by,
            reason,
        })
    }

    /// The names of the active tools bound to `agent` whose required scopes `scopes` carry.
    async fn usable_tools(
        &self,
        agent: &Agent,
        scopes: &BTreeSet<String>,
    ) -> Result<BTreeSet<String>, GrantError> {
        let bound = self.tools.agent_tools(agent.account_id, agent.id).await?;
        Ok(bound
            .iter()
            .filter(|tool| tool.active)
            .filter(|tool| tool.spec.required_scopes.iter().all(|s| scopes.contains(s)))
            .map(|tool| tool.spec.name.clone())
            .collect())
    }

    /// Whether the token `record` of `agent` (active, checked by the caller) may call the
    /// tool `name` now: the tool is the account's, active and bound to the agent, the token
    /// carries the scopes it requires, and the access rules, asked about this tool with the
    /// token's scopes, do not deny it or narrow a required scope away.
    pub(crate) async fn tool_access(
        &self,
        agent: &Agent,
        record: &TokenRecord,
        delegated: &Delegated,
        name: &str,
        now: DateTime<Utc>,
    ) -> Result<ToolAccess, GrantError> {
        let refuse = |reason, missing_scopes| ToolAccess {
            allowed: false,
            reason,
            decided_by: None,
            missing_scopes,
        };
        let account = agent.account_id;
        let Some(tool) = self.tools.by_name(account, name).await? else {
            return Ok(refuse(ToolAccessReason::UnknownTool, Vec::new()));
        };
        if !tool.active {
            return Ok(refuse(ToolAccessReason::ToolInactive, Vec::new()));
        }
        let bound = self.tools.agent_tools(account, agent.id).await?;
        if !bound.iter().any(|t| t.id == tool.id) {
            return Ok(refuse(ToolAccessReason::NotBound, Vec::new()));
        }
        if !delegated.allows_tool(name) {
            return Ok(refuse(ToolAccessReason::NotDelegated, Vec::new()));
        }
        let carried: BTreeSet<String> = record.scopes.iter().cloned().collect();
        let missing = |scopes: &BTreeSet<String>| -> Vec<String> {
            tool.spec
                .required_scopes
                .iter()
                .filter(|s| !scopes.contains(*s))
                .cloned()
                .collect()
        };
        let lacking = missing(&carried);
        if !lacking.is_empty() {
            return Ok(refuse(ToolAccessReason::MissingScopes, lacking));
        }
        let mut access = ToolAccess {
            allowed: true,
            reason: ToolAccessReason::Allowed,
            decided_by: None,
            missing_scopes: Vec::new(),
        };
        for resource in &record.audience {
            let request = AccessRequest {
                agent: facts(agent),
                principal: delegated.principal.clone(),
                scopes: carried.clone(),
                tools: BTreeSet::from([tool.spec.name.clone()]),
                resource: Some(resource.clone()),
                grant_type: record.grant_type.as_str().to_owned(),
                task_id: Some(record.task_id.clone()),
                parent_task_id: record.parent_task_id.clone(),
                now,
            };
            let decision = self.rules.decide(account, &request).await?;
            let lacking = missing(&decision.scopes);
            if !decision.allowed || !lacking.is_empty() {
                return Ok(ToolAccess {
                    allowed: false,
                    reason: ToolAccessReason::DeniedByRule,
                    decided_by: decision.decided_by,
                    missing_scopes: lacking,
                });
            }
            if decision.decided_by.is_some() {
                access.decided_by = decision.decided_by;
            }
        }
        Ok(access)
    }

    /// What `agent` holds to delegate: the scopes it may have (expanded), the active tools
    /// bound to it, and the resources it may target (`None`: its tokens target the issuer
    /// only, so it holds no resource to name).
    pub(crate) async fn agent_holdings(&self, agent: &Agent) -> Result<Holdings, GrantError> {
        let known = self.scopes.known(agent.account_id).await?;
        let bound = self.tools.agent_tools(agent.account_id, agent.id).await?;
        Ok(Holdings {
            scopes: Some(closure(
                &known,
                agent.spec.scopes.iter().map(String::as_str),
            )),
            tools: Some(
                bound
                    .iter()
                    .filter(|tool| tool.active)
                    .map(|tool| tool.spec.name.clone())
                    .collect(),
            ),
            resources: Some(agent.spec.resources.iter().cloned().collect()),
        })
    }

    /// What a principal of `account` holds to delegate, of the `tools` a grant names: any
    /// scope and resource (principals carry none of their own: the grantee's allowed scopes
    /// and resources, and access rules on `principal.*`, bound what they delegate), and the
    /// account's active tools.
    pub(crate) async fn principal_holdings(
        &self,
        account: AccountId,
        tools: Option<&BTreeSet<String>>,
    ) -> Result<Holdings, GrantError> {
        let mut active = BTreeSet::new();
        for name in tools.into_iter().flatten() {
            if self
                .tools
                .by_name(account, name)
                .await?
                .is_some_and(|tool| tool.active)
            {
                active.insert(name.clone());
            }
        }
        Ok(Holdings {
            scopes: None,
            tools: Some(active),
            resources: None,
        })
    }

    /// What a consent page shows of `agent` asking for `scopes` (none: every scope it may
    /// have): each scope with its description, refusing one it may not have; and its
    /// active tools those scopes let it call, with theirs.
    pub(crate) async fn consent_items(
        &self,
        agent: &Agent,
        scopes: &[String],
    ) -> Result<Result<ConsentItems, String>, GrantError> {
        let known = self.scopes.known(agent.account_id).await?;
        let allowed = closure(&known, agent.spec.scopes.iter().map(String::as_str));
        let asked: Vec<&String> = if scopes.is_empty() {
            agent.spec.scopes.iter().collect()
        } else {
            scopes.iter().collect()
        };
        if let Some(refused) = asked.iter().find(|scope| !allowed.contains(**scope)) {
            return Ok(Err((*refused).clone()));
        }
        let reach = closure(&known, asked.iter().map(|scope| scope.as_str()));
        let described = |name: &String| {
            let description = known
                .get(name)
                .and_then(|scope| scope.scope.spec.description.clone());
            (name.clone(), description)
        };
        let tools = self
            .tools
            .agent_tools(agent.account_id, agent.id)
            .await?
            .iter()
            .filter(|tool| {
                tool.active
                    && tool
                        .spec
                        .required_scopes
                        .iter()
                        .all(|scope| reach.contains(scope))
            })
            .map(|tool| (tool.spec.name.clone(), tool.spec.description.clone()))
            .collect();
        Ok(Ok(ConsentItems {
            scopes: asked.into_iter().map(described).collect(),
            tools,
        }))
    }

    /// `names` with every scope the account's catalog says they imply.
    pub(crate) async fn expanded(
        &self,
        account: AccountId,
        names: impl IntoIterator<Item = &String>,
    ) -> Result<BTreeSet<String>, GrantError> {
        let known = self.scopes.known(account).await?;
        Ok(closure(&known, names.into_iter().map(String::as_str)))
    }

    /// The account's scope catalog (for the discovery document's `scopes_supported`).
    pub async fn known_scopes(&self, account: AccountId) -> Result<Arc<KnownScopes>, GrantError> {
        Ok(self.scopes.known(account).await?)
    }
}

fn facts(agent: &Agent) -> AgentFacts {
    AgentFacts {
        id: agent.id,
        name: agent.spec.name.clone(),
        attributes: agent.spec.attributes.clone(),
    }
}
