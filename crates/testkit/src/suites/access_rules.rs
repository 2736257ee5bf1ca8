//! Access rules: stored as their validated JSON and read back as the same rule, names
//! unique in their account and the account's number of rules bounded (also under
//! concurrent creations), listed newest first, the enabled ones read for decisions,
//! replaced, deleted; every change audited, and nothing of one account reachable from
//! another.

#![expect(
    clippy::panic,
    clippy::unwrap_used,
    reason = "a test suite for adapters: failing loudly is its job"
)]

use d2_audit::{AuditAction, AuditEntry, AuditLog};
use d2_kernel::{AccountId, PageRequest};
use d2_oauth::{AccessRule, AccessRuleRepo, RuleSpec, RuleWrite};
use futures_util::future::join_all;
use serde_json::json;

use crate::fixtures::at;
use crate::fixtures::audited;

/// Everything the suite needs from one store.
pub trait Store: AccessRuleRepo + AuditLog {}
impl<T: AccessRuleRepo + AuditLog> Store for T {}

/// A rule that uses most of the language, so its stored form is read back whole.
fn spec(name: &str, enabled: bool) -> RuleSpec {
    RuleSpec::from_value(&json!({
        "name": name,
        "description": "Finance reads reports during office hours",
        "priority": -5,
        "enabled": enabled,
        "effect": "narrow",
        "scopes": ["reports.read", "reports.list"],
        "when": {"all": [
            {"attr": "principal.attributes.department", "op": "in", "value": ["finance", 7, null]},
            {"any": [
                {"attr": "time.hour", "op": "gte", "value": 9},
                {"not": {"attr": "time.weekday", "op": "in", "value": ["sat", "sun"]}}
            ]},
            {"attr": "agent.name", "op": "matches", "value": "^report-[a-z]+$"},
            {"attr": "time.now", "op": "lt", "value": "2030-01-01T00:00:00+02:00"},
            {"attr": "task.id", "op": "exists"}
        ]}
    }))
    .unwrap_or_else(|e| panic!("{e}"))
}

fn entry(rule: &AccessRule, action: AuditAction) -> AuditEntry {
    AuditEntry::system(rule.account_id, action, at(0)).target("access_rule", rule.id)
}

async fn create(store: &dyn Store, rule: &AccessRule, max: usize) -> RuleWrite {
    store
        .create_rule(rule, max, &entry(rule, AuditAction::AccessRuleCreate))
        .await
        .unwrap_or_else(|e| panic!("create: {e}"))
}

async fn created(
    store: &dyn Store,
    account: AccountId,
    name: &str,
    enabled: bool,
    seconds: i64,
) -> AccessRule {
    let rule = AccessRule::new(account, spec(name, enabled), at(seconds));
    assert_eq!(
        create(store, &rule, 10).await,
        RuleWrite::Written(Box::new(rule.clone()))
    );
    rule
}

pub async fn access_rules(store: &dyn Store, a: AccountId, b: AccountId) {
    let office = created(store, a, "office hours", true, 0).await;
    assert_eq!(
        store.rule(a, office.id).await.unwrap(),
        Some(office.clone()),
        "the rule comes back as written"
    );
    assert_eq!(store.rule(b, office.id).await.unwrap(), None);
    let twin = AccessRule::new(a, spec("office hours", false), at(1));
    assert_eq!(create(store, &twin, 10).await, RuleWrite::NameTaken);
    created(store, b, "office hours", true, 1).await;
    let off = created(store, a, "switched off", false, 2).await;
    let last = created(store, a, "last", true, 3).await;

    // Newest first, in pages; decisions read the enabled ones only.
    let first = store.rules(a, &PageRequest::first(2)).await.unwrap();
    assert_eq!(first.items, vec![last.clone(), off.clone()]);
    let cursor = first.next.unwrap().encode();
    let rest = store
        .rules(a, &PageRequest::parse(Some(2), Some(&cursor)).unwrap())
        .await
        .unwrap();
    assert_eq!(rest.items, vec![office.clone()]);
    let mut enabled = store.enabled_rules(a).await.unwrap();
    enabled.sort_by_key(|r| r.created_at);
    assert_eq!(enabled, vec![office.clone(), last.clone()]);

    // The account's rules are bounded.
    let over = AccessRule::new(a, spec("one too many", true), at(4));
    assert_eq!(create(store, &over, 3).await, RuleWrite::TooMany(3));
    assert_eq!(store.rule(a, over.id).await.unwrap(), None);

    // Replacing: names stay unique; another account's rule is not found.
    let audit_update = |r: &AccessRule| entry(r, AuditAction::AccessRuleUpdate);
    let deny = RuleSpec::from_value(&json!({"name": "deny all", "effect": "deny"})).unwrap();
    let outcome = store
        .update_rule(a, off.id, &deny, at(10), &audit_update)
        .await
        .unwrap();
    let RuleWrite::Written(updated) = outcome else {
        panic!("updated: {outcome:?}");
    };
    assert_eq!(updated.spec, deny);
    assert_eq!((updated.created_at, updated.updated_at), (at(2), at(10)));
    assert_eq!(store.rule(a, off.id).await.unwrap(), Some(*updated));
    assert_eq!(
        store.enabled_rules(a).await.unwrap().len(),
        3,
        "now enabled"
    );
    assert_eq!(
        store
            .update_rule(a, off.id, &spec("last", true), at(11), &audit_update)
            .await
            .unwrap(),
        RuleWrite::NameTaken
    );
    assert_eq!(
        store
            .update_rule(b, off.id, &spec("mine", true), at(11), &audit_update)
            .await
            .unwrap(),
        RuleWrite::NotFound
    );

    // Deleting, in its account only.
    let delete = entry(&last, AuditAction::AccessRuleDelete);
    assert!(!store.delete_rule(b, last.id, &delete).await.unwrap());
    assert!(store.delete_rule(a, last.id, &delete).await.unwrap());
    assert!(!store.delete_rule(a, last.id, &delete).await.unwrap());
    assert_eq!(store.rule(a, last.id).await.unwrap(), None);

    assert_eq!(audited(store, a, AuditAction::AccessRuleCreate).await, 3);
    assert_eq!(audited(store, a, AuditAction::AccessRuleUpdate).await, 1);
    assert_eq!(audited(store, a, AuditAction::AccessRuleDelete).await, 1);
    assert_eq!(audited(store, b, AuditAction::AccessRuleUpdate).await, 0);
    assert_eq!(store.enabled_rules(b).await.unwrap().len(), 1);
}

/// Eight concurrent creations of one name: one is written. Eight concurrent creations of
/// different names with room for three: three are written.
pub async fn access_rule_races(store: &dyn Store, account: AccountId) {
    let same: Vec<AccessRule> = (0..8)
        .map(|i| AccessRule::new(account, spec("same", true), at(i)))
        .collect();
    let outcomes = join_all(same.iter().map(|rule| create(store, rule, 100))).await;
    let written = outcomes
        .iter()
        .filter(|o| matches!(o, RuleWrite::Written(_)))
        .count();
    assert_eq!(written, 1);

    let many: Vec<AccessRule> = (0..8)
        .map(|i| AccessRule::new(account, spec(&format!("rule {i}"), true), at(i)))
        .collect();
    let outcomes = join_all(many.iter().map(|rule| create(store, rule, 4))).await;
    let written = outcomes
        .iter()
        .filter(|o| matches!(o, RuleWrite::Written(_)))
        .count();
    assert_eq!(written, 3, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, RuleWrite::Written(_) | RuleWrite::TooMany(4)))
    );
    assert_eq!(store.enabled_rules(account).await.unwrap().len(), 4);
    assert_eq!(
        audited(store, account, AuditAction::AccessRuleCreate).await,
        4
    );
}
