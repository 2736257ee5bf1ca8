//! Deciding an access request against an account's rules, and explaining the decision.
//!
//! Enabled rules are read in priority order (lower first; ties by name). The first
//! matching `allow` or `deny` decides, and later rules are not read; each matching `narrow`
//! keeps only its scopes of those granted so far and reading goes on. A narrowing that
//! leaves no scope denies, naming that rule. When no rule matches, the request is granted
//! as asked (the agent's own allowed scopes already bound it): `decided_by` is `None`.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Datelike as _, Timelike as _, Utc};
use serde_json::{Map, Value};

use super::condition::{Attr, Fact};
use super::rule::{AccessRule, Effect, RuleId};
use crate::agent::AgentId;
use crate::principal::PrincipalId;

/// The agent asking, as the token endpoint knows it.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentFacts {
    pub id: AgentId,
    pub name: String,
    /// What rules read as `agent.attributes.<key>`.
    pub attributes: Map<String, Value>,
}

/// The principal the agent acts for, when it acts for one.
#[derive(Clone, Debug, PartialEq)]
pub struct PrincipalFacts {
    pub id: PrincipalId,
    /// What rules read as `principal.attributes.<key>`.
    pub attributes: Map<String, Value>,
}

/// What the token endpoint knows when it issues a token: the facts every rule reads.
#[derive(Clone, Debug, PartialEq)]
pub struct AccessRequest {
    pub agent: AgentFacts,
    pub principal: Option<PrincipalFacts>,
    /// The scopes asked for, already bounded by the agent's allowed scopes.
    pub scopes: BTreeSet<String>,
    /// The tools asked for.
    pub tools: BTreeSet<String>,
    /// The RFC 8707 resource (the token's audience), if any.
    pub resource: Option<String>,
    pub grant_type: String,
    pub task_id: Option<String>,
    pub parent_task_id: Option<String>,
    /// When the request is decided (`time.*` read it, in UTC).
    pub now: DateTime<Utc>,
}

/// A rule, as decisions name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleRef {
    pub id: RuleId,
    pub name: Arc<str>,
}

/// Why a decision is what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// No rule matched: granted as asked.
    NoRuleMatched,
    /// An `allow` rule matched (after the narrowing of earlier rules, if any).
    Allowed,
    /// `narrow` rules matched and no `allow` or `deny` did: granted, narrowed.
    Narrowed,
    /// A `deny` rule matched.
    Denied,
    /// A `narrow` rule left no scope.
    NarrowedToNothing,
}

impl Reason {
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::NoRuleMatched => "no_rule_matched",
            Reason::Allowed => "allowed",
            Reason::Narrowed => "narrowed",
            Reason::Denied => "denied",
            Reason::NarrowedToNothing => "narrowed_to_nothing",
        }
    }
}

/// What evaluation did with one rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Matched,
    NotMatched,
    /// An earlier rule decided: this one was not read.
    NotReached,
}

impl Step {
    pub const fn as_str(self) -> &'static str {
        match self {
            Step::Matched => "matched",
            Step::NotMatched => "not_matched",
            Step::NotReached => "not_reached",
        }
    }
}

/// One enabled rule's part in a decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleTrace {
    pub rule: RuleRef,
    pub priority: i32,
    pub effect: Effect,
    pub step: Step,
    /// For a `narrow` rule that matched: the scopes it removed.
    pub removed: BTreeSet<String>,
}

/// The outcome of an access request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The scopes granted (empty when denied).
    pub scopes: BTreeSet<String>,
    /// The rule that decided: the matching `allow` or `deny`, the `narrow` that left no
    /// scope, else the last `narrow` that matched; `None` when no rule matched.
    pub decided_by: Option<RuleRef>,
    pub reason: Reason,
    /// Every enabled rule, in evaluation order, with what evaluation did with it.
    pub trace: Vec<RuleTrace>,
}

/// One compiled rule.
#[derive(Debug)]
struct Compiled {
    rule: AccessRule,
    reference: RuleRef,
}

/// An account's enabled rules, compiled and in evaluation order.
#[derive(Debug, Default)]
pub struct RuleSet {
    rules: Vec<Compiled>,
}

impl RuleSet {
    /// The set of `rules`' enabled ones (disabled rules are left out).
    pub fn new(rules: impl IntoIterator<Item = AccessRule>) -> Self {
        let mut rules: Vec<Compiled> = rules
            .into_iter()
            .filter(|rule| rule.spec.enabled)
            .map(|rule| Compiled {
                reference: RuleRef {
                    id: rule.id,
                    name: Arc::from(rule.spec.name.as_str()),
                },
                rule,
            })
            .collect();
        rules.sort_by(|a, b| {
            (a.rule.spec.priority, &a.rule.spec.name)
                .cmp(&(b.rule.spec.priority, &b.rule.spec.name))
        });
        Self { rules }
    }

    /// How many rules are evaluated.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Decides `request`, with the trace of every rule.
    pub fn decide(&self, request: &AccessRequest) -> Decision {
        let facts = Facts::of(request);
        let mut scopes = request.scopes.clone();
        let mut trace = Vec::with_capacity(self.rules.len());
        let mut decided: Option<(Reason, &RuleRef)> = None;
        let mut last_narrow: Option<&RuleRef> = None;
        for compiled in &self.rules {
            let spec = &compiled.rule.spec;
            let mut step = |step: Step, removed: BTreeSet<String>| {
                trace.push(RuleTrace {
                    rule: compiled.reference.clone(),
                    priority: spec.priority,
                    effect: spec.effect,
                    step,
                    removed,
                });
            };
            if decided.is_some() {
                step(Step::NotReached, BTreeSet::new());
                continue;
            }
            if !spec.when.as_ref().is_none_or(|when| when.holds(&facts)) {
                step(Step::NotMatched, BTreeSet::new());
                continue;
            }
            let mut removed = BTreeSet::new();
            match spec.effect {
                Effect::Allow => decided = Some((Reason::Allowed, &compiled.reference)),
                Effect::Deny => decided = Some((Reason::Denied, &compiled.reference)),
                Effect::Narrow => {
                    let had_scopes = !scopes.is_empty();
                    scopes.retain(|scope| {
                        let keep = spec.scopes.contains(scope);
                        if !keep {
                            removed.insert(scope.clone());
                        }
                        keep
                    });
                    last_narrow = Some(&compiled.reference);
                    if had_scopes && scopes.is_empty() {
                        decided = Some((Reason::NarrowedToNothing, &compiled.reference));
                    }
                }
            }
            step(Step::Matched, removed);
        }
        let (reason, decided_by) = match (decided, last_narrow) {
            (Some((reason, rule)), _) => (reason, Some(rule.clone())),
            (None, Some(rule)) => (Reason::Narrowed, Some(rule.clone())),
            (None, None) => (Reason::NoRuleMatched, None),
        };
        let allowed = !matches!(reason, Reason::Denied | Reason::NarrowedToNothing);
        Decision {
            allowed,
            scopes: if allowed { scopes } else { BTreeSet::new() },
            decided_by,
            reason,
            trace,
        }
    }
}

/// A request's facts, with the clock's parts computed once.
#[derive(Debug)]
pub(crate) struct Facts<'a> {
    request: &'a AccessRequest,
    hour: u32,
    weekday: chrono::Weekday,
}

impl<'a> Facts<'a> {
    fn of(request: &'a AccessRequest) -> Self {
        Self {
            request,
            hour: request.now.hour(),
            weekday: request.now.weekday(),
        }
    }

    pub(crate) fn get(&self, attr: &Attr) -> Fact<'a> {
        let request = self.request;
        let text = |text: &'a Option<String>| text.as_deref().map_or(Fact::Missing, Fact::Text);
        let json = |value: Option<&'a Value>| value.map_or(Fact::Missing, Fact::Json);
        match attr {
            Attr::AgentId => Fact::Id(*request.agent.id.as_uuid()),
            Attr::AgentName => Fact::Text(&request.agent.name),
            Attr::AgentAttribute(key) => json(request.agent.attributes.get(key)),
            Attr::PrincipalId => request
                .principal
                .as_ref()
                .map_or(Fact::Missing, |p| Fact::Id(*p.id.as_uuid())),
            Attr::PrincipalAttribute(key) => json(
                request
                    .principal
                    .as_ref()
                    .and_then(|p| p.attributes.get(key)),
            ),
            Attr::Scopes => Fact::Set(&request.scopes),
            Attr::Tools => Fact::Set(&request.tools),
            Attr::Resource => text(&request.resource),
            Attr::GrantType => Fact::Text(&request.grant_type),
            Attr::TaskId => text(&request.task_id),
            Attr::ParentTaskId => text(&request.parent_task_id),
            Attr::Hour => Fact::Hour(self.hour),
            Attr::Weekday => Fact::Day(self.weekday),
            Attr::Now => Fact::Time(request.now),
        }
    }
}
