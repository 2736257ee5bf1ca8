use std::str::FromStr;

use chrono::{DateTime, Utc};
use d2_kernel::{AccountId, AuthContext, TokenId, UserId};
use serde_json::Value;

d2_kernel::named_values! {
    /// What happened. The names are stable and shown to customers.
    pub enum AuditAction (unknown: UnknownAction) {
        /// A new account, its owner and first admin token, created by the control plane.
        AccountBootstrap = "account.bootstrap",
        /// An account's settings changed (name, sampling, metrics).
        AccountUpdate = "account.update",
        /// A trial ended and the account was locked by the worker.
        AccountLock = "account.lock",
        /// A new account, created by a signed-in person who becomes its owner.
        AccountCreate = "account.create",
        /// A member's role changed.
        MemberRoleChange = "member.role_change",
        /// A member was removed from the account (or left it).
        MemberRemove = "member.remove",
        /// Someone was invited to the account by email.
        InvitationCreate = "invitation.create",
        /// A pending invitation was cancelled.
        InvitationCancel = "invitation.cancel",
        /// An invitation was accepted: the person became a member.
        InvitationAccept = "invitation.accept",
        TokenCreate = "token.create",
        TokenRevoke = "token.revoke",
        TokenRotate = "token.rotate",
        /// A token's name or expiry changed.
        TokenUpdate = "token.update",
        /// A token passed its expiry (or its rotation grace) and was marked revoked by the worker.
        TokenExpire = "token.expire",
        /// An owner token issued by the control plane for an existing account.
        TokenBreakGlass = "token.break_glass",
        /// An account's signing key was created (its first one, on first publish or by d2ctl).
        KeyCreate = "jwks.key_create",
        /// An account's signing key was replaced and its active bundles re-signed.
        JwksRotate = "jwks.rotate",
        /// A publisher (Ed25519) key was registered.
        KeyUpload = "key.upload",
        /// A publisher key was revoked.
        KeyRevoke = "key.revoke",
        /// A publisher key waiting for approval was approved by an admin.
        KeyApprove = "key.approve",
        PolicyDraft = "policy.draft",
        PolicyPublish = "policy.publish",
        /// A published policy's description or content changed (content changes are new versions).
        PolicyUpdate = "policy.update",
        PolicyRevert = "policy.revert",
        PolicyRevoke = "policy.revoke",
        /// An agent (an OAuth client) was registered; it waits for its registration token.
        AgentRegister = "agent.register",
        /// An agent was activated with its registration token and got its client secret.
        AgentActivate = "agent.activate",
        /// An agent's registration changed, or it was turned on or off.
        AgentUpdate = "agent.update",
        AgentDelete = "agent.delete",
        /// An agent's client secret was replaced (the old one works for the grace period).
        AgentSecretRotate = "agent.secret_rotate",
        /// Tokens were issued to an agent (client credentials).
        OAuthTokenIssue = "oauth.token_issue",
        /// A refresh token was spent for new tokens.
        OAuthTokenRefresh = "oauth.token_refresh",
        /// A spent refresh token was presented again: its whole family was revoked.
        OAuthRefreshReuse = "oauth.refresh_reuse",
        /// An authenticated agent was refused tokens (scope, target, rules).
        OAuthTokenDeny = "oauth.token_deny",
        /// Tokens were revoked (by their client, an admin, or the deletion of their agent).
        OAuthTokenRevoke = "oauth.token_revoke",
        /// A token of the account that no longer works was presented for introspection.
        OAuthIntrospectDeny = "oauth.introspect_deny",
        /// The account's policy for clients named by a metadata document changed.
        OAuthClientPolicyUpdate = "oauth.client_policy_update",
        /// A new initial access token for dynamic client registration replaced the last.
        OAuthInitialAccessIssue = "oauth.initial_access_issue",
        /// A checkout of the payment provider completed: its customer is the account's.
        BillingCheckoutComplete = "billing.checkout_complete",
        /// The payment provider reported a subscription's state: its status, and the
        /// account's plan and lock it brought.
        BillingSubscriptionUpdate = "billing.subscription_update",
        /// Credits were granted to the account.
        BillingCreditsAdd = "billing.credits_add",
        /// Credits of the account were spent.
        BillingCreditsSpend = "billing.credits_spend",
        /// Credits were reserved for work under way.
        BillingCreditsReserve = "billing.credits_reserve",
        /// A reservation was settled for what the work cost; the rest given back.
        BillingCreditsSettle = "billing.credits_settle",
        /// A reservation reached its expiry unsettled; all given back.
        BillingCreditsExpire = "billing.credits_expire",
        /// A budget of a model or an agent was set.
        BillingBudgetSet = "billing.budget_set",
        /// A budget of a model or an agent was removed.
        BillingBudgetDelete = "billing.budget_delete",
        /// A batch of usage reports was recorded and paid for in credits.
        BillingUsageRecord = "billing.usage_record",
        /// The account's notice endpoint was set (threshold notices are posted to it).
        BillingNoticeEndpointSet = "billing.notice_endpoint_set",
        /// The account's notice endpoint was removed.
        BillingNoticeEndpointDelete = "billing.notice_endpoint_delete",
        /// Usage reached 80, 90 or 100 % of included credits or of a budget: a notice was
        /// raised for the period, and its delivery enqueued.
        BillingThresholdNotice = "billing.threshold_notice",
        PrincipalCreate = "principal.create",
        PrincipalUpdate = "principal.update",
        PrincipalDelete = "principal.delete",
        /// A principal or an agent let an agent act for it (a delegation grant).
        DelegationCreate = "delegation.create",
        /// A delegation grant was revoked.
        DelegationRevoke = "delegation.revoke",
        AccessRuleCreate = "access_rule.create",
        AccessRuleUpdate = "access_rule.update",
        AccessRuleDelete = "access_rule.delete",
        /// A tool was bound to an agent.
        AgentToolBind = "agent.tool_bind",
        /// A tool was unbound from an agent.
        AgentToolUnbind = "agent.tool_unbind",
        /// A tool was added to the account's catalog.
        ToolCreate = "tool.create",
        /// A tool's definition changed.
        ToolUpdate = "tool.update",
        /// A tool was deleted (and unbound from every agent).
        ToolDelete = "tool.delete",
        ToolActivate = "tool.activate",
        ToolDeactivate = "tool.deactivate",
        /// The account's scope catalog was loaded with the default scopes (on its first use).
        ScopeSeed = "scope.seed",
        ScopeCreate = "scope.create",
        /// A scope's description, category or implied scopes changed.
        ScopeUpdate = "scope.update",
        ScopeDelete = "scope.delete",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown audit action `{0}`")]
pub struct UnknownAction(pub String);

/// The outcome the record describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuditStatus {
    Success,
    Failure,
    Denied,
}

impl AuditStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            AuditStatus::Success => "success",
            AuditStatus::Failure => "failure",
            AuditStatus::Denied => "denied",
        }
    }
}

impl FromStr for AuditStatus {
    type Err = UnknownAction;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "success" => Ok(AuditStatus::Success),
            "failure" => Ok(AuditStatus::Failure),
            "denied" => Ok(AuditStatus::Denied),
            other => Err(UnknownAction(other.to_owned())),
        }
    }
}

/// A record to be written together with the change it describes.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditEntry {
    pub account_id: AccountId,
    /// Who acted: `token:<id>`, `user:<id>`, `principal:<id>`, `control_plane` or `system`.
    pub actor: String,
    pub token_id: Option<TokenId>,
    pub user_id: Option<UserId>,
    pub action: AuditAction,
    pub status: AuditStatus,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    /// Details of the change. Never a secret.
    pub metadata: Value,
    pub occurred_at: DateTime<Utc>,
}

impl AuditEntry {
    /// A successful action by an authenticated caller, in the caller's account.
    pub fn by(ctx: &AuthContext, action: AuditAction, at: DateTime<Utc>) -> Self {
        Self {
            actor: ctx.actor(),
            token_id: ctx.token_id(),
            user_id: ctx.user_id,
            ..Self::system(ctx.account_id, action, at)
        }
    }

    /// A successful action by a signed-in person outside any account's session (creating
    /// an account, accepting an invitation): recorded in the account it concerns.
    pub fn by_user(
        account_id: AccountId,
        user_id: UserId,
        action: AuditAction,
        at: DateTime<Utc>,
    ) -> Self {
        Self {
            actor: format!("user:{user_id}"),
            user_id: Some(user_id),
            ..Self::system(account_id, action, at)
        }
    }

    /// A successful action by the control plane (bootstrap, break-glass, the CLI).
    /// What one of the account's principals (its end users) did themselves, signed in at
    /// the consent pages: `principal:<id>`.
    pub fn by_principal(
        account_id: AccountId,
        principal: impl std::fmt::Display,
        action: AuditAction,
        at: DateTime<Utc>,
    ) -> Self {
        Self {
            actor: format!("principal:{principal}"),
            ..Self::system(account_id, action, at)
        }
    }

    pub fn control_plane(account_id: AccountId, action: AuditAction, at: DateTime<Utc>) -> Self {
        Self {
            actor: "control_plane".to_owned(),
            ..Self::system(account_id, action, at)
        }
    }

    /// A successful action by the system itself (scheduled jobs).
    pub fn system(account_id: AccountId, action: AuditAction, at: DateTime<Utc>) -> Self {
        Self {
            account_id,
            actor: "system".to_owned(),
            token_id: None,
            user_id: None,
            action,
            status: AuditStatus::Success,
            resource_type: None,
            resource_id: None,
            metadata: Value::Object(serde_json::Map::new()),
            occurred_at: at,
        }
    }

    pub fn target(mut self, resource_type: &str, resource_id: impl ToString) -> Self {
        self.resource_type = Some(resource_type.to_owned());
        self.resource_id = Some(resource_id.to_string());
        self
    }

    pub fn metadata(mut self, metadata: Value) -> Self {
        self.metadata = metadata;
        self
    }

    pub fn user(mut self, user_id: Option<UserId>) -> Self {
        self.user_id = user_id;
        self
    }
}

/// A stored record.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditRecord {
    pub id: i64,
    pub entry: AuditEntry,
    /// How lists name the person `entry.user_id` names (display name, else full name, else
    /// email), read with the record; `None` without a person or one the store does not know.
    pub user_name: Option<String>,
}

/// Which records to list. Every field narrows the result.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub action: Option<AuditAction>,
    pub actor: Option<String>,
    /// Inclusive lower bound.
    pub since: Option<DateTime<Utc>>,
    /// Exclusive upper bound.
    pub until: Option<DateTime<Utc>>,
    /// Only the records of this task: their `metadata.task_id` (OAuth issuances, refreshes,
    /// reuses and introspection refusals carry one).
    pub task_id: Option<String>,
}

impl AuditFilter {
    pub fn matches(&self, entry: &AuditEntry) -> bool {
        self.action.is_none_or(|action| action == entry.action)
            && self
                .actor
                .as_deref()
                .is_none_or(|actor| actor == entry.actor)
            && self.since.is_none_or(|since| entry.occurred_at >= since)
            && self.until.is_none_or(|until| entry.occurred_at < until)
            && self.task_id.as_deref().is_none_or(|task| {
                entry.metadata.get("task_id").and_then(|t| t.as_str()) == Some(task)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_parses_back_from_its_name() {
        for action in AuditAction::ALL {
            assert_eq!(action.as_str().parse::<AuditAction>(), Ok(action));
            assert_eq!(action.to_string(), action.as_str());
        }
        assert_eq!(
            "account.locked".parse::<AuditAction>(),
            Err(UnknownAction("account.locked".to_owned()))
        );
    }

    #[test]
    fn names_are_stable_and_unique() {
        // Customers filter on these names: changing one breaks them.
        let names: Vec<&str> = AuditAction::ALL.iter().map(|a| a.as_str()).collect();
        assert_eq!(
            names,
            [
                "account.bootstrap",
                "account.update",
                "account.lock",
                "account.create",
                "member.role_change",
                "member.remove",
                "invitation.create",
                "invitation.cancel",
                "invitation.accept",
                "token.create",
                "token.revoke",
                "token.rotate",
                "token.update",
                "token.expire",
                "token.break_glass",
                "jwks.key_create",
                "jwks.rotate",
                "key.upload",
                "key.revoke",
                "key.approve",
                "policy.draft",
                "policy.publish",
                "policy.update",
                "policy.revert",
                "policy.revoke",
                "agent.register",
                "agent.activate",
                "agent.update",
                "agent.delete",
                "agent.secret_rotate",
                "oauth.token_issue",
                "oauth.token_refresh",
                "oauth.refresh_reuse",
                "oauth.token_deny",
                "oauth.token_revoke",
                "oauth.introspect_deny",
                "oauth.client_policy_update",
                "oauth.initial_access_issue",
                "billing.checkout_complete",
                "billing.subscription_update",
                "billing.credits_add",
                "billing.credits_spend",
                "billing.credits_reserve",
                "billing.credits_settle",
                "billing.credits_expire",
                "billing.budget_set",
                "billing.budget_delete",
                "billing.usage_record",
                "billing.notice_endpoint_set",
                "billing.notice_endpoint_delete",
                "billing.threshold_notice",
                "principal.create",
                "principal.update",
                "principal.delete",
                "delegation.create",
                "delegation.revoke",
                "access_rule.create",
                "access_rule.update",
                "access_rule.delete",
                "agent.tool_bind",
                "agent.tool_unbind",
                "tool.create",
                "tool.update",
                "tool.delete",
                "tool.activate",
                "tool.deactivate",
                "scope.seed",
                "scope.create",
                "scope.update",
                "scope.delete",
            ]
        );
        let unique: std::collections::BTreeSet<&str> = names.iter().copied().collect();
        assert_eq!(unique.len(), names.len());
    }
}
