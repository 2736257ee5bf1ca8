//! Deciding an access request with 1, 10 and 100 rules: the compiled rule set alone, and
//! through the service's per-account cache (what the token endpoint calls).

#![expect(
    clippy::unwrap_used,
    reason = "a benchmark: a failure should stop it loudly"
)]

use std::hint::black_box;
use std::sync::Arc;

use chrono::{TimeZone as _, Utc};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use d2_audit::memory::MemoryAuditLog;
use d2_kernel::{
    AccountId, AuthContext, CacheSettings, Credential, Grant, ManualClock, Scope, ScopeSet, TokenId,
};
use d2_oauth::memory::MemoryAccessRules;
use d2_oauth::{
    AccessRequest, AccessRule, AccessRules, AgentFacts, AgentId, PrincipalFacts, PrincipalId,
    RuleSet, RuleSpec,
};
use serde_json::json;

/// Rule `i` of a set: mostly rules that do not match this request (another department, or
/// a scope it does not ask for), evaluated in full; every tenth narrows.
fn rule(i: usize) -> RuleSpec {
    let document = if i % 10 == 9 {
        json!({"name": format!("rule {i:03}"), "priority": i, "effect": "narrow",
               "scopes": ["reports.read", "reports.export", "mail.send", format!("extra.{i}")],
               "when": {"all": [
                   {"attr": "principal.attributes.department", "op": "in", "value": ["finance", "legal"]},
                   {"attr": "time.hour", "op": "gte", "value": 6},
                   {"attr": "agent.name", "op": "starts_with", "value": "report"}]}})
    } else {
        json!({"name": format!("rule {i:03}"), "priority": i, "effect": "deny",
               "when": {"all": [
                   {"attr": "request.scopes", "op": "contains", "value": format!("admin.{i}")},
                   {"any": [
                       {"attr": "principal.attributes.department", "op": "eq", "value": format!("dept-{i}")},
                       {"attr": "time.weekday", "op": "in", "value": ["sat", "sun"]}]},
                   {"not": {"attr": "agent.attributes.tier", "op": "eq", "value": "gold"}}]}})
    };
    RuleSpec::from_value(&document).unwrap()
}

fn request() -> AccessRequest {
    AccessRequest {
        agent: AgentFacts {
            id: AgentId::random(),
            name: "reporter".into(),
            attributes: json!({"tier": "gold"}).as_object().unwrap().clone(),
        },
        principal: Some(PrincipalFacts {
            id: PrincipalId::random(),
            attributes: json!({"department": "finance", "level": 3})
                .as_object()
                .unwrap()
                .clone(),
        }),
        scopes: ["reports.read", "reports.export", "mail.send"]
            .map(String::from)
            .into(),
        tools: ["search"].map(String::from).into(),
        resource: Some("https://api.example.com".into()),
        grant_type: "client_credentials".into(),
        task_id: Some("task-1".into()),
        parent_task_id: None,
        // A Wednesday afternoon.
        now: Utc.with_ymd_and_hms(2026, 12, 2, 14, 0, 0).unwrap(),
    }
}

fn admin(account_id: AccountId) -> AuthContext {
    AuthContext {
        account_id,
        credential: Credential::ApiToken(TokenId::random()),
        user_id: None,
        acting_for: None,
        role: None,
        scopes: ScopeSet::new([Grant::Scope(Scope::Admin)]),
        app_name: None,
    }
}

fn decide(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let request = request();
    let mut group = c.benchmark_group("access_rules");
    for count in [1_usize, 10, 100] {
        let account = AccountId::random();
        let clock = Arc::new(ManualClock::starting_now());
        let repo = Arc::new(MemoryAccessRules::new(Arc::new(MemoryAuditLog::default())));
        let service = AccessRules::new(repo, clock, CacheSettings::default());
        for i in 0..count {
            runtime
                .block_on(service.create(&admin(account), rule(i)))
                .unwrap();
        }
        let set = RuleSet::new((0..count).map(|i| AccessRule::new(account, rule(i), request.now)));
        // Warm: the service's first decision compiles the account's rules.
        let first = runtime.block_on(service.decide(account, &request)).unwrap();
        assert!(first.allowed);
        assert_eq!(first.trace.len(), count);
        group.bench_with_input(BenchmarkId::new("rule_set", count), &count, |b, _| {
            b.iter(|| set.decide(black_box(&request)));
        });
        group.bench_with_input(BenchmarkId::new("decide_cached", count), &count, |b, _| {
            b.to_async(&runtime)
                .iter(|| async { service.decide(account, black_box(&request)).await.unwrap() });
        });
    }
    group.finish();
}

criterion_group!(benches, decide);
criterion_main!(benches);
