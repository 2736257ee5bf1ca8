//! Managing an account's access rules (its admins), and deciding access requests from the
//! account's compiled rules, cached in memory and dropped on every replica when they
//! change (`Change::AccessRules`).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use d2_audit::{AuditAction, AuditEntry};
use d2_kernel::{
    AccountId, AuthContext, CacheSettings, Change, ChangeSubscriber, Clock, CoherentCache, Page,
    PageRequest, Scope,
};
use serde_json::json;

use crate::error::AccessRuleError;
use crate::ports::{AccessRuleRepo, RuleWrite};
use crate::rules::decision::{AccessRequest, Decision, RuleSet};
use crate::rules::rule::{AccessRule, RuleId, RuleSpec, limits};

/// The access rules of every account: their management and the decisions they make.
pub struct AccessRules {
    repo: Arc<dyn AccessRuleRepo>,
    clock: Arc<dyn Clock>,
    compiled: CoherentCache<AccountId, Arc<RuleSet>>,
}

impl std::fmt::Debug for AccessRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessRules")
            .field("compiled", &self.compiled)
            .finish_non_exhaustive()
    }
}

fn audit(
    ctx: &AuthContext,
    action: AuditAction,
    rule: &AccessRule,
    now: DateTime<Utc>,
) -> AuditEntry {
    AuditEntry::by(ctx, action, now)
        .target("access_rule", rule.id)
        .metadata(json!({
            "name": rule.spec.name,
            "effect": rule.spec.effect.as_str(),
            "priority": rule.spec.priority,
            "enabled": rule.spec.enabled,
        }))
}

fn written(outcome: RuleWrite) -> Result<AccessRule, AccessRuleError> {
    match outcome {
        RuleWrite::Written(rule) => Ok(*rule),
        RuleWrite::NameTaken => Err(AccessRuleError::NameTaken),
        RuleWrite::TooMany(max) => Err(AccessRuleError::TooMany(max)),
        RuleWrite::NotFound => Err(AccessRuleError::NotFound),
    }
}

impl AccessRules {
    /// `cache`: how many accounts' compiled rules are kept, and for how long at most (the
    /// change feed drops them sooner when they change).
    pub fn new(repo: Arc<dyn AccessRuleRepo>, clock: Arc<dyn Clock>, cache: CacheSettings) -> Self {
        Self {
            repo,
            clock,
            compiled: CoherentCache::new(cache),
        }
    }

    /// Stores a new rule in the caller's account (`admin`). Audited `access_rule.create`.
    pub async fn create(
        &self,
        ctx: &AuthContext,
        spec: RuleSpec,
    ) -> Result<AccessRule, AccessRuleError> {
        ctx.require(Scope::Admin)?;
        spec.check()?;
        let rule = AccessRule::new(ctx.account_id, spec, self.clock.now());
        let entry = audit(ctx, AuditAction::AccessRuleCreate, &rule, rule.created_at);
        let outcome = self.repo.create_rule(&rule, limits::RULES, &entry).await?;
        self.forget(ctx.account_id).await;
        let rule = written(outcome)?;
        tracing::info!(access_rule.id = %rule.id, account.id = %rule.account_id, "access rule created");
        Ok(rule)
    }

    pub async fn get(&self, ctx: &AuthContext, id: RuleId) -> Result<AccessRule, AccessRuleError> {
        ctx.require(Scope::Admin)?;
        self.repo
            .rule(ctx.account_id, id)
            .await?
            .ok_or(AccessRuleError::NotFound)
    }

    /// The account's rules, newest first.
    pub async fn list(
        &self,
        ctx: &AuthContext,
        page: &PageRequest,
    ) -> Result<Page<AccessRule>, AccessRuleError> {
        ctx.require(Scope::Admin)?;
        Ok(self.repo.rules(ctx.account_id, page).await?)
    }

    /// Replaces the rule. Audited `access_rule.update`.
    pub async fn update(
        &self,
        ctx: &AuthContext,
        id: RuleId,
        spec: RuleSpec,
    ) -> Result<AccessRule, AccessRuleError> {
        ctx.require(Scope::Admin)?;
        spec.check()?;
        let now = self.clock.now();
        let audit_of = |rule: &AccessRule| audit(ctx, AuditAction::AccessRuleUpdate, rule, now);
        let outcome = self
            .repo
            .update_rule(ctx.account_id, id, &spec, now, &audit_of)
            .await?;
        self.forget(ctx.account_id).await;
        written(outcome)
    }

    /// Deletes the rule. Audited `access_rule.delete`.
    pub async fn delete(&self, ctx: &AuthContext, id: RuleId) -> Result<(), AccessRuleError> {
        ctx.require(Scope::Admin)?;
        let entry = AuditEntry::by(ctx, AuditAction::AccessRuleDelete, self.clock.now())
            .target("access_rule", id);
        let deleted = self.repo.delete_rule(ctx.account_id, id, &entry).await?;
        self.forget(ctx.account_id).await;
        if !deleted {
            return Err(AccessRuleError::NotFound);
        }
        tracing::info!(access_rule.id = %id, account.id = %ctx.account_id, "access rule deleted");
        Ok(())
    }

    /// What the caller's account's rules decide for `request`, rule by rule (`admin`).
    pub async fn explain(
        &self,
        ctx: &AuthContext,
        request: &AccessRequest,
    ) -> Result<Decision, AccessRuleError> {
        ctx.require(Scope::Admin)?;
        self.decide(ctx.account_id, request).await
    }

    /// What `account`'s enabled rules decide for `request`: the token endpoint's call at
    /// issuance. The rules come compiled from memory; a miss reads and compiles them once.
    pub async fn decide(
        &self,
        account: AccountId,
        request: &AccessRequest,
    ) -> Result<Decision, AccessRuleError> {
        Ok(self.rule_set(account).await?.decide(request))
    }

    /// The account's enabled rules, compiled, in evaluation order.
    pub async fn rule_set(&self, account: AccountId) -> Result<Arc<RuleSet>, AccessRuleError> {
        self.compiled
            .get_or_load(&account, || async {
                let rules = self.repo.enabled_rules(account).await?;
                Ok::<_, AccessRuleError>(Arc::new(RuleSet::new(rules)))
            })
            .await
    }

    /// Drops the account's compiled rules here (other replicas hear the change feed).
    async fn forget(&self, account: AccountId) {
        self.compiled.invalidate(&account).await;
    }
}

impl ChangeSubscriber for AccessRules {
    fn on_change(&self, change: &Change) {
        match change {
            Change::AccessRules(account) => {
                let account = *account;
                self.compiled.invalidate_if(move |key, _| *key == account);
            }
            Change::Resync => self.compiled.invalidate_all(),
            _ => {}
        }
    }
}
