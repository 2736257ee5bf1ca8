//! The principals and access rules services, against the in-memory stores: who may manage
//! them, what they refuse, what they audit, and the compiled rules' cache.

use std::sync::Arc;

use d2_audit::AuditAction;
use d2_audit::memory::MemoryAuditLog;
use d2_kernel::{
    AccountId, AuthContext, CacheSettings, Change, ChangeSubscriber as _, Clock as _, Code,
    Credential, ErrorCode as _, Grant, ManualClock, PageRequest, Scope, ScopeSet, TokenId,
};
use serde_json::json;

use crate::memory::{MemoryAccessRules, MemoryAgents, MemoryPrincipals};
use crate::*;

struct World {
    clock: Arc<ManualClock>,
    audit: Arc<MemoryAuditLog>,
    repo: Arc<MemoryAccessRules>,
    principals: PrincipalService,
    rules: AccessRules,
    account: AccountId,
}

fn world() -> World {
    let clock = Arc::new(ManualClock::starting_now());
    let audit = Arc::new(MemoryAuditLog::default());
    let repo = Arc::new(MemoryAccessRules::new(audit.clone()));
    World {
        principals: PrincipalService::new(
            Arc::new(MemoryPrincipals::new(Arc::new(MemoryAgents::new(
                audit.clone(),
            )))),
            Arc::new(TokenRecords::new(CacheSettings::default())),
            clock.clone(),
        ),
        rules: AccessRules::new(repo.clone(), clock.clone(), CacheSettings::default()),
        repo,
        clock,
        audit,
        account: AccountId::random(),
    }
}

fn caller(account_id: AccountId, grants: &[Grant]) -> AuthContext {
    AuthContext {
        account_id,
        credential: Credential::ApiToken(TokenId::random()),
        user_id: None,
        acting_for: None,
        role: None,
        scopes: ScopeSet::new(grants.iter().copied()),
        app_name: None,
    }
}

fn admin(account_id: AccountId) -> AuthContext {
    caller(account_id, &[Grant::Scope(Scope::Admin)])
}

fn alice() -> PrincipalSpec {
    PrincipalSpec {
        username: " alice ".into(),
        email: Some("alice@example.com".into()),
        display_name: Some("Alice".into()),
        attributes: json!({"department": "finance"})
            .as_object()
            .unwrap()
            .clone(),
        active: true,
    }
}

fn spec(value: serde_json::Value) -> RuleSpec {
    RuleSpec::from_value(&value).unwrap()
}

impl World {
    fn audited(&self, action: AuditAction) -> usize {
        self.audit
            .all()
            .iter()
            .filter(|r| r.entry.action == action)
            .count()
    }

    fn request(&self, principal: Option<&Principal>) -> AccessRequest {
        AccessRequest {
            agent: AgentFacts {
                id: AgentId::random(),
                name: "bot".into(),
                attributes: serde_json::Map::new(),
            },
            principal: principal.map(|p| PrincipalFacts {
                id: p.id,
                attributes: p.spec.attributes.clone(),
            }),
            scopes: ["reports.read", "reports.export"].map(String::from).into(),
            tools: Default::default(),
            resource: None,
            grant_type: "client_credentials".into(),
            task_id: None,
            parent_task_id: None,
            now: self.clock.now(),
        }
    }
}

#[tokio::test]
async fn principals_are_managed_by_admins_with_unique_usernames_and_every_change_audited() {
    let w = world();
    let created = w
        .principals
        .create(&admin(w.account), alice())
        .await
        .unwrap();
    assert_eq!(created.spec.username, "alice");
    assert_eq!(w.audited(AuditAction::PrincipalCreate), 1);
    let again = w
        .principals
        .create(&admin(w.account), alice())
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::UsernameTaken);
    // Another account may have its own alice.
    let other = AccountId::random();
    w.principals.create(&admin(other), alice()).await.unwrap();

    let mut changed = alice();
    changed.active = false;
    changed.username = "alice.b".into();
    let updated = w
        .principals
        .update(&admin(w.account), created.id, changed)
        .await
        .unwrap();
    assert!(!updated.spec.active);
    assert_eq!(w.audited(AuditAction::PrincipalUpdate), 1);
    let page = PageRequest::first(10);
    let inactive = w
        .principals
        .list(&admin(w.account), Some(false), &page)
        .await
        .unwrap();
    assert_eq!(inactive.items, vec![updated.clone()]);
    let active = w
        .principals
        .list(&admin(w.account), Some(true), &page)
        .await
        .unwrap();
    assert!(active.items.is_empty());

    // What the token endpoint reads, by account.
    assert_eq!(
        w.principals.principal(w.account, created.id).await.unwrap(),
        Some(updated)
    );
    assert_eq!(
        w.principals.principal(other, created.id).await.unwrap(),
        None
    );
    // Another account's admin neither reads nor deletes it.
    let stranger = admin(other);
    let error = w.principals.get(&stranger, created.id).await.unwrap_err();
    assert_eq!(error.code(), Code::PrincipalNotFound);
    let error = w
        .principals
        .delete(&stranger, created.id)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::PrincipalNotFound);
    w.principals
        .delete(&admin(w.account), created.id)
        .await
        .unwrap();
    assert_eq!(w.audited(AuditAction::PrincipalDelete), 1);
}

#[tokio::test]
async fn bad_principals_are_refused_before_anything_is_written() {
    let w = world();
    let too_many: serde_json::Map<String, serde_json::Value> =
        (0..65).map(|i| (format!("k{i}"), json!(i))).collect();
    let too_large = json!({"blob": "x".repeat(17_000)})
        .as_object()
        .unwrap()
        .clone();
    let long_key = json!({"k".repeat(65): 1}).as_object().unwrap().clone();
    for (change, words) in [
        (
            PrincipalSpec {
                username: "  ".into(),
                ..alice()
            },
            "`username`",
        ),
        (
            PrincipalSpec {
                username: "u".repeat(201),
                ..alice()
            },
            "`username`",
        ),
        (
            PrincipalSpec {
                email: Some("nobody".into()),
                ..alice()
            },
            "`email`",
        ),
        (
            PrincipalSpec {
                email: Some("a b@c.d".into()),
                ..alice()
            },
            "`email`",
        ),
        (
            PrincipalSpec {
                attributes: too_many,
                ..alice()
            },
            "64 keys",
        ),
        (
            PrincipalSpec {
                attributes: too_large,
                ..alice()
            },
            "bytes",
        ),
        (
            PrincipalSpec {
                attributes: long_key,
                ..alice()
            },
            "key",
        ),
    ] {
        let error = w
            .principals
            .create(&admin(w.account), change)
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::InvalidPrincipal, "{error}");
        assert!(error.to_string().contains(words), "{error}");
    }
    let member = caller(w.account, &[Grant::Scope(Scope::MetricsRead)]);
    let error = w.principals.create(&member, alice()).await.unwrap_err();
    assert_eq!(error.code(), Code::InsufficientScope);
    assert_eq!(w.audit.all().len(), 0);
}

#[tokio::test]
async fn rules_are_managed_by_admins_with_unique_names_and_bounded_in_number() {
    let w = world();
    let ctx = admin(w.account);
    let deny = spec(json!({"name": "deny all", "effect": "deny"}));
    let rule = w.rules.create(&ctx, deny.clone()).await.unwrap();
    assert_eq!(w.audited(AuditAction::AccessRuleCreate), 1);
    let error = w.rules.create(&ctx, deny.clone()).await.unwrap_err();
    assert_eq!(error.code(), Code::AccessRuleNameTaken);
    let member = caller(w.account, &[Grant::Scope(Scope::PolicyRead)]);
    assert_eq!(
        w.rules
            .create(&member, deny.clone())
            .await
            .unwrap_err()
            .code(),
        Code::InsufficientScope
    );
    let stranger = admin(AccountId::random());
    for error in [
        w.rules.get(&stranger, rule.id).await.unwrap_err(),
        w.rules
            .update(&stranger, rule.id, deny.clone())
            .await
            .unwrap_err(),
        w.rules.delete(&stranger, rule.id).await.unwrap_err(),
    ] {
        assert_eq!(error.code(), Code::AccessRuleNotFound);
    }
    let renamed = spec(json!({"name": "renamed", "effect": "deny", "enabled": false}));
    let updated = w.rules.update(&ctx, rule.id, renamed).await.unwrap();
    assert_eq!(updated.spec.name, "renamed");
    assert_eq!(w.audited(AuditAction::AccessRuleUpdate), 1);

    for i in 1..crate::rules::rule::limits::RULES {
        let rule = spec(json!({"name": format!("rule {i}"), "effect": "allow"}));
        w.rules.create(&ctx, rule).await.unwrap();
    }
    let error = w
        .rules
        .create(&ctx, spec(json!({"name": "one more", "effect": "allow"})))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::AccessRuleLimit);
    w.rules.delete(&ctx, rule.id).await.unwrap();
    assert_eq!(w.audited(AuditAction::AccessRuleDelete), 1);
}

#[tokio::test]
async fn decisions_read_compiled_rules_from_memory_until_the_rules_change() {
    let w = world();
    let ctx = admin(w.account);
    let principal = w.principals.create(&ctx, alice()).await.unwrap();
    let request = w.request(Some(&principal));
    let first = w.rules.decide(w.account, &request).await.unwrap();
    assert_eq!(first.reason, Reason::NoRuleMatched);

    // Written through this service: its own cache is dropped at once.
    let rule = w
        .rules
        .create(
            &ctx,
            spec(json!({"name": "finance reads only", "effect": "narrow", "scopes": ["reports.read"],
                "when": {"attr": "principal.attributes.department", "op": "eq", "value": "finance"}})),
        )
        .await
        .unwrap();
    let narrowed = w.rules.explain(&ctx, &request).await.unwrap();
    assert_eq!(narrowed.reason, Reason::Narrowed);
    assert_eq!(narrowed.decided_by.as_ref().unwrap().id, rule.id);
    assert_eq!(narrowed.scopes.len(), 1);

    // Written by another replica: this one keeps its compiled rules until the change
    // feed names the account.
    let audit =
        d2_audit::AuditEntry::system(w.account, AuditAction::AccessRuleDelete, w.clock.now());
    assert!(
        w.repo
            .delete_rule(w.account, rule.id, &audit)
            .await
            .unwrap()
    );
    let stale = w.rules.decide(w.account, &request).await.unwrap();
    assert_eq!(stale.reason, Reason::Narrowed, "still cached");
    w.rules.on_change(&Change::AccessRules(AccountId::random()));
    assert_eq!(
        w.rules.decide(w.account, &request).await.unwrap().reason,
        Reason::Narrowed
    );
    w.rules.on_change(&Change::AccessRules(w.account));
    let fresh = w.rules.decide(w.account, &request).await.unwrap();
    assert_eq!(fresh.reason, Reason::NoRuleMatched);

    // Explaining needs an admin of the account.
    let member = caller(w.account, &[Grant::Scope(Scope::PolicyRead)]);
    assert_eq!(
        w.rules.explain(&member, &request).await.unwrap_err().code(),
        Code::InsufficientScope
    );
}
