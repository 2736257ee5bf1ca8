//! The OAuth catalog: tools (unique names per account, filters, newest first, active or
//! not), the tools bound to agents (both of the account; gone with either), scopes seeded
//! once per account (also under concurrent first uses) and changed one decision at a time
//! (concurrent changes never make a cycle); every change audited, and nothing of one
//! account reachable from another.

#![expect(
    clippy::panic,
    clippy::unwrap_used,
    clippy::arithmetic_side_effects,
    reason = "a test suite for adapters: failing loudly is its job"
)]

use d2_audit::{AuditAction, AuditEntry, AuditLog};
use d2_kernel::{AccountId, PageRequest};
use d2_oauth::{
    Agent, AgentRepo, AgentSpec, AuthMethod, BindOutcome, CatalogError, KnownScopes, OAuthScope,
    PendingRegistration, ScopeChange, ScopeRepo, ScopeSpec, Tool, ToolFilter, ToolRepo, ToolSpec,
    ToolWrite, UnbindOutcome,
};
use futures_util::future::join_all;
use serde_json::json;

use crate::fixtures::audited;
use crate::fixtures::{at, pepper};

/// Everything the suites need from one store.
pub trait Store: ToolRepo + ScopeRepo + AgentRepo + AuditLog {}
impl<T: ToolRepo + ScopeRepo + AgentRepo + AuditLog> Store for T {}

fn entry(account: AccountId, action: AuditAction) -> AuditEntry {
    AuditEntry::system(account, action, at(0))
}

fn spec(name: &str, category: Option<&str>) -> ToolSpec {
    ToolSpec {
        name: name.to_owned(),
        description: Some("Does a thing".into()),
        category: category.map(str::to_owned),
        parameters: json!({"type": "object", "properties": {"q": {"type": "string"}}}),
        required_scopes: vec!["tools:execute".into()],
    }
}

async fn create(store: &dyn Store, account: AccountId, name: &str, seconds: i64) -> Tool {
    let tool = Tool::new(account, spec(name, Some("search")), true, at(seconds));
    let written = store
        .create_tool(&tool, &entry(account, AuditAction::ToolCreate))
        .await
        .unwrap_or_else(|e| panic!("create tool: {e}"));
    assert_eq!(written, ToolWrite::Done(Box::new(tool.clone())));
    tool
}

async fn agent(store: &dyn Store, account: AccountId, name: &str) -> Agent {
    let agent = Agent::new(
        account,
        AgentSpec {
            name: name.to_owned(),
            description: None,
            scopes: vec![],
            redirect_uris: vec![],
            resources: vec![],
            attributes: serde_json::Map::new(),
            auth_method: AuthMethod::ClientSecretBasic,
            jwks: None,
            jwks_uri: None,
            access_token_seconds: 600,
            refresh_token_seconds: None,
        },
        None,
        at(0),
    );
    let registration = PendingRegistration::new(pepper().digest_text(name), at(0));
    store
        .register(
            &agent,
            &registration,
            &entry(account, AuditAction::AgentRegister),
        )
        .await
        .unwrap();
    agent
}

pub async fn tools(store: &dyn Store, a: AccountId, b: AccountId) {
    let search = create(store, a, "search.web", 0).await;
    assert_eq!(
        store.tool(a, search.id).await.unwrap(),
        Some(search.clone())
    );
    assert_eq!(store.tool(b, search.id).await.unwrap(), None);
    assert_eq!(
        store.tool_named(a, "search.web").await.unwrap(),
        Some(search.clone()),
        "every column comes back as written"
    );
    assert_eq!(store.tool_named(b, "search.web").await.unwrap(), None);

    // Names are unique per account, not across accounts.
    let twin = Tool::new(a, spec("search.web", None), true, at(1));
    assert_eq!(
        store
            .create_tool(&twin, &entry(a, AuditAction::ToolCreate))
            .await
            .unwrap(),
        ToolWrite::NameTaken
    );
    assert_eq!(store.tool(a, twin.id).await.unwrap(), None);
    let elsewhere = create(store, b, "search.web", 1).await;
    let read = create(store, a, "fs.read", 2).await;
    let write = create(store, a, "fs.write", 3).await;
    let mut off = Tool::new(a, spec("mail.send", Some("mail")), false, at(4));
    off.spec.required_scopes = vec![];
    store
        .create_tool(&off, &entry(a, AuditAction::ToolCreate))
        .await
        .unwrap();
    assert_eq!(audited(store, a, AuditAction::ToolCreate).await, 4);

    // Newest first, in pages, with filters.
    let first = store
        .tools(a, &ToolFilter::default(), &PageRequest::first(2))
        .await
        .unwrap();
    assert_eq!(first.items, [off.clone(), write.clone()]);
    let cursor = first.next.clone().unwrap();
    let second = store
        .tools(
            a,
            &ToolFilter::default(),
            &PageRequest::parse(Some(2), Some(&cursor.encode())).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(second.items, [read.clone(), search.clone()]);
    assert_eq!(second.next, None);
    let inactive = ToolFilter {
        active: Some(false),
        ..ToolFilter::default()
    };
    let listed = |filter: ToolFilter| async move {
        store
            .tools(a, &filter, &PageRequest::first(100))
            .await
            .unwrap()
            .items
    };
    assert_eq!(listed(inactive).await, [off.clone()]);
    assert_eq!(
        listed(ToolFilter {
            category: Some("search".into()),
            active: Some(true),
        })
        .await,
        [write.clone(), read.clone(), search.clone()]
    );
    assert_eq!(
        store
            .tools(b, &ToolFilter::default(), &PageRequest::first(100))
            .await
            .unwrap()
            .items,
        std::slice::from_ref(&elsewhere)
    );

    // Updates replace the spec; a name another tool has is refused, its own is kept.
    let audit_update = |_: &Tool| entry(a, AuditAction::ToolUpdate);
    let mut renamed = spec("fs.read.v2", None);
    renamed.parameters = json!({"type": "object", "required": ["path"]});
    renamed.required_scopes = vec!["fs:read".into(), "tools:read".into()];
    let ToolWrite::Done(updated) = store
        .update_tool(a, read.id, &renamed, at(10), &audit_update)
        .await
        .unwrap()
    else {
        panic!("not updated");
    };
    assert_eq!(updated.spec, renamed);
    assert_eq!(updated.created_at, read.created_at);
    assert_eq!(updated.updated_at, at(10));
    assert_eq!(
        store.tool(a, read.id).await.unwrap(),
        Some(*updated.clone())
    );
    assert_eq!(
        store
            .update_tool(a, read.id, &spec("fs.write", None), at(11), &audit_update)
            .await
            .unwrap(),
        ToolWrite::NameTaken
    );
    assert!(matches!(
        store
            .update_tool(a, read.id, &renamed, at(12), &audit_update)
            .await
            .unwrap(),
        ToolWrite::Done(_)
    ));
    assert_eq!(audited(store, a, AuditAction::ToolUpdate).await, 2);

    // Turned off and on; again is no change and no record.
    let audit_off = |_: &Tool| entry(a, AuditAction::ToolDeactivate);
    let ToolWrite::Done(turned_off) = store
        .set_tool_active(a, search.id, false, at(20), &audit_off)
        .await
        .unwrap()
    else {
        panic!("not turned off");
    };
    assert!(!turned_off.active);
    assert_eq!(turned_off.updated_at, at(20));
    store
        .set_tool_active(a, search.id, false, at(21), &audit_off)
        .await
        .unwrap();
    assert_eq!(audited(store, a, AuditAction::ToolDeactivate).await, 1);
    assert_eq!(
        store.tool(a, search.id).await.unwrap().unwrap().updated_at,
        at(20)
    );

    // Another account reaches none of it.
    let audit_b = |_: &Tool| entry(b, AuditAction::ToolUpdate);
    assert_eq!(
        store
            .update_tool(b, write.id, &spec("taken", None), at(30), &audit_b)
            .await
            .unwrap(),
        ToolWrite::NotFound
    );
    assert_eq!(
        store
            .set_tool_active(b, write.id, false, at(30), &audit_b)
            .await
            .unwrap(),
        ToolWrite::NotFound
    );
    assert!(
        !store
            .delete_tool(b, write.id, &entry(b, AuditAction::ToolDelete))
            .await
            .unwrap()
    );
    assert_eq!(store.tool(a, write.id).await.unwrap(), Some(write.clone()));
    assert_eq!(audited(store, b, AuditAction::ToolUpdate).await, 0);
    assert_eq!(audited(store, b, AuditAction::ToolDelete).await, 0);

    assert!(
        store
            .delete_tool(a, write.id, &entry(a, AuditAction::ToolDelete))
            .await
            .unwrap()
    );
    assert_eq!(store.tool(a, write.id).await.unwrap(), None);
    assert!(
        !store
            .delete_tool(a, write.id, &entry(a, AuditAction::ToolDelete))
            .await
            .unwrap()
    );
    assert_eq!(audited(store, a, AuditAction::ToolDelete).await, 1);
    // The name is free again.
    create(store, a, "fs.write", 40).await;
}

pub async fn tool_bindings(store: &dyn Store, a: AccountId, b: AccountId) {
    let agent_a = agent(store, a, "Researcher").await;
    let agent_b = agent(store, b, "Stranger").await;
    let search = create(store, a, "search.web", 0).await;
    let read = create(store, a, "fs.read", 1).await;
    let foreign = create(store, b, "search.web", 2).await;
    let bind = |account, agent, tool| async move {
        store
            .bind_tool(
                account,
                agent,
                tool,
                at(5),
                &entry(account, AuditAction::AgentToolBind),
            )
            .await
            .unwrap()
    };
    let unbind = |account, agent, tool| async move {
        store
            .unbind_tool(
                account,
                agent,
                tool,
                &entry(account, AuditAction::AgentToolUnbind),
            )
            .await
            .unwrap()
    };
    assert_eq!(
        store.agent_tools(a, agent_a.id).await.unwrap(),
        Some(vec![])
    );
    assert_eq!(bind(a, agent_a.id, search.id).await, BindOutcome::Bound);
    assert_eq!(
        bind(a, agent_a.id, search.id).await,
        BindOutcome::AlreadyBound
    );
    assert_eq!(bind(a, agent_a.id, read.id).await, BindOutcome::Bound);
    assert_eq!(audited(store, a, AuditAction::AgentToolBind).await, 2);
    assert_eq!(
        store.agent_tools(a, agent_a.id).await.unwrap(),
        Some(vec![read.clone(), search.clone()]),
        "by name"
    );

    // Both must be the account's own: nothing is written otherwise.
    assert_eq!(
        bind(a, agent_b.id, search.id).await,
        BindOutcome::AgentNotFound
    );
    assert_eq!(
        bind(a, agent_a.id, foreign.id).await,
        BindOutcome::ToolNotFound
    );
    assert_eq!(
        bind(b, agent_a.id, foreign.id).await,
        BindOutcome::AgentNotFound
    );
    assert_eq!(
        bind(b, agent_b.id, search.id).await,
        BindOutcome::ToolNotFound
    );
    assert_eq!(
        unbind(b, agent_a.id, search.id).await,
        UnbindOutcome::AgentNotFound
    );
    assert_eq!(
        unbind(b, agent_b.id, search.id).await,
        UnbindOutcome::ToolNotFound
    );
    assert_eq!(store.agent_tools(b, agent_a.id).await.unwrap(), None);
    assert_eq!(
        store.agent_tools(b, agent_b.id).await.unwrap(),
        Some(vec![])
    );
    assert_eq!(audited(store, b, AuditAction::AgentToolBind).await, 0);
    assert_eq!(audited(store, b, AuditAction::AgentToolUnbind).await, 0);

    assert_eq!(unbind(a, agent_a.id, read.id).await, UnbindOutcome::Unbound);
    assert_eq!(
        unbind(a, agent_a.id, read.id).await,
        UnbindOutcome::NotBound
    );
    assert_eq!(audited(store, a, AuditAction::AgentToolUnbind).await, 1);
    assert_eq!(
        store.agent_tools(a, agent_a.id).await.unwrap(),
        Some(vec![search.clone()])
    );

    // A binding goes with its tool, and with its agent.
    let other = agent(store, a, "Other").await;
    assert_eq!(bind(a, other.id, search.id).await, BindOutcome::Bound);
    assert_eq!(bind(a, other.id, read.id).await, BindOutcome::Bound);
    store
        .delete_tool(a, search.id, &entry(a, AuditAction::ToolDelete))
        .await
        .unwrap();
    assert_eq!(
        store.agent_tools(a, agent_a.id).await.unwrap(),
        Some(vec![])
    );
    assert_eq!(
        store.agent_tools(a, other.id).await.unwrap(),
        Some(vec![read.clone()])
    );
    assert!(
        store
            .delete(a, other.id, &entry(a, AuditAction::AgentDelete))
            .await
            .unwrap()
    );
    assert_eq!(store.agent_tools(a, other.id).await.unwrap(), None);
    // The tool stays, and can be deleted without a binding in the way.
    assert!(
        store
            .delete_tool(a, read.id, &entry(a, AuditAction::ToolDelete))
            .await
            .unwrap()
    );
}

fn scope(account: AccountId, name: &str, implies: &[&str], seconds: i64) -> OAuthScope {
    OAuthScope::new(
        account,
        ScopeSpec {
            name: name.to_owned(),
            description: Some(format!("{name} things")),
            category: Some("tools".into()),
            implies: implies.iter().map(|i| (*i).to_owned()).collect(),
        },
        at(seconds),
    )
}

fn defaults(account: AccountId) -> Vec<OAuthScope> {
    vec![
        scope(account, "tools:read", &[], 0),
        scope(account, "tools:execute", &["tools:read"], 0),
        scope(account, "admin", &["tools:execute"], 0),
    ]
}

/// A plan that checks `change` against the scopes as they stand, as the service does.
fn plan_of(
    account: AccountId,
    change: ScopeChange,
    action: AuditAction,
) -> impl Fn(&[OAuthScope]) -> Result<(ScopeChange, AuditEntry), CatalogError> + Sync {
    move |current: &[OAuthScope]| {
        let known = KnownScopes::new(current.to_vec());
        match &change {
            ScopeChange::Create(scope) | ScopeChange::Update(scope) => known.check(&scope.spec)?,
            ScopeChange::Delete(_) => {}
        }
        Ok((change.clone(), entry(account, action)))
    }
}

async fn names(store: &dyn Store, account: AccountId) -> Vec<String> {
    store
        .scopes(account)
        .await
        .unwrap()
        .unwrap()
        .iter()
        .map(|s| s.spec.name.clone())
        .collect()
}

pub async fn scopes(store: &dyn Store, a: AccountId, b: AccountId) {
    assert_eq!(store.scopes(a).await.unwrap(), None, "never seeded");
    assert!(
        store
            .seed_scopes(a, &defaults(a), &entry(a, AuditAction::ScopeSeed))
            .await
            .unwrap()
    );
    let seeded = store.scopes(a).await.unwrap().unwrap();
    let mut expected = defaults(a);
    expected.sort_by(|x, y| x.spec.name.cmp(&y.spec.name));
    assert_eq!(
        seeded, expected,
        "every column comes back as written, by name"
    );
    assert!(
        !store
            .seed_scopes(
                a,
                &[scope(a, "late", &[], 1)],
                &entry(a, AuditAction::ScopeSeed)
            )
            .await
            .unwrap(),
        "seeded once"
    );
    assert_eq!(audited(store, a, AuditAction::ScopeSeed).await, 1);
    assert_eq!(store.scopes(b).await.unwrap(), None);
    assert!(
        store
            .seed_scopes(b, &[], &entry(b, AuditAction::ScopeSeed))
            .await
            .unwrap()
    );
    assert_eq!(store.scopes(b).await.unwrap(), Some(vec![]), "seeded empty");

    // Changes: created, updated (created_at kept by the plan), deleted.
    let created = scope(a, "reports:export", &["tools:read"], 10);
    let change = plan_of(
        a,
        ScopeChange::Create(created.clone()),
        AuditAction::ScopeCreate,
    );
    assert_eq!(
        store.change_scopes(a, &change).await.unwrap().unwrap(),
        ScopeChange::Create(created.clone())
    );
    let again = store.change_scopes(a, &change).await.unwrap().unwrap_err();
    assert!(matches!(again, CatalogError::ScopeNameTaken(name) if name == "reports:export"));
    let mut updated = scope(a, "reports:export", &["admin"], 10);
    updated.spec.description = None;
    updated.spec.category = None;
    updated.updated_at = at(20);
    let change = plan_of(
        a,
        ScopeChange::Update(updated.clone()),
        AuditAction::ScopeUpdate,
    );
    store.change_scopes(a, &change).await.unwrap().unwrap();
    let stored = store.scopes(a).await.unwrap().unwrap();
    assert!(stored.contains(&updated), "{stored:?}");

    // What the plan refuses writes nothing.
    let cycle = scope(a, "tools:read", &["reports:export"], 0);
    let change = plan_of(a, ScopeChange::Update(cycle), AuditAction::ScopeUpdate);
    let refused = store.change_scopes(a, &change).await.unwrap().unwrap_err();
    assert!(matches!(refused, CatalogError::ScopeCycle(_)), "{refused}");
    assert_eq!(store.scopes(a).await.unwrap().unwrap(), stored);
    let ghost = scope(a, "ghost", &[], 0);
    let change = plan_of(a, ScopeChange::Update(ghost), AuditAction::ScopeUpdate);
    assert!(matches!(
        store.change_scopes(a, &change).await.unwrap().unwrap_err(),
        CatalogError::ScopeNotFound(_)
    ));
    let change = plan_of(
        a,
        ScopeChange::Delete("ghost".into()),
        AuditAction::ScopeDelete,
    );
    assert!(matches!(
        store.change_scopes(a, &change).await.unwrap().unwrap_err(),
        CatalogError::ScopeNotFound(_)
    ));
    assert_eq!(audited(store, a, AuditAction::ScopeUpdate).await, 1);

    // Another account's catalog is untouched, and touches nothing here.
    let change = plan_of(
        b,
        ScopeChange::Delete("admin".into()),
        AuditAction::ScopeDelete,
    );
    assert!(matches!(
        store.change_scopes(b, &change).await.unwrap().unwrap_err(),
        CatalogError::ScopeNotFound(_)
    ));
    let foreign = scope(b, "admin", &[], 30);
    let change = plan_of(b, ScopeChange::Create(foreign), AuditAction::ScopeCreate);
    store.change_scopes(b, &change).await.unwrap().unwrap();
    assert_eq!(names(store, b).await, ["admin"]);

    let change = plan_of(
        a,
        ScopeChange::Delete("reports:export".into()),
        AuditAction::ScopeDelete,
    );
    store.change_scopes(a, &change).await.unwrap().unwrap();
    assert_eq!(
        names(store, a).await,
        ["admin", "tools:execute", "tools:read"]
    );
    assert_eq!(audited(store, a, AuditAction::ScopeDelete).await, 1);
    assert_eq!(audited(store, a, AuditAction::ScopeCreate).await, 1);
    assert_eq!(audited(store, b, AuditAction::ScopeCreate).await, 1);
}

/// Eight first uses at once seed the catalog once.
pub async fn scope_seeding_races(store: &dyn Store, a: AccountId) {
    let audit = entry(a, AuditAction::ScopeSeed);
    let defaults = defaults(a);
    let outcomes = join_all((0..8).map(|_| store.seed_scopes(a, &defaults, &audit))).await;
    let seeded = outcomes
        .into_iter()
        .map(|outcome| outcome.unwrap_or_else(|e| panic!("seed: {e}")))
        .filter(|seeded| *seeded)
        .count();
    assert_eq!(seeded, 1);
    assert_eq!(
        names(store, a).await,
        ["admin", "tools:execute", "tools:read"]
    );
    assert_eq!(audited(store, a, AuditAction::ScopeSeed).await, 1);
}

/// Changes decided at once from the same catalog are decided one after another: eight
/// updates, half making `p` imply `q` and half `q` imply `p`, leave no cycle behind.
pub async fn scope_change_races(store: &dyn Store, a: AccountId) {
    store
        .seed_scopes(
            a,
            &[scope(a, "p", &[], 0), scope(a, "q", &[], 0)],
            &entry(a, AuditAction::ScopeSeed),
        )
        .await
        .unwrap();
    let plans: Vec<_> = (0..8)
        .map(|i| {
            let (from, to) = if i % 2 == 0 { ("p", "q") } else { ("q", "p") };
            plan_of(
                a,
                ScopeChange::Update(scope(a, from, &[to], 1)),
                AuditAction::ScopeUpdate,
            )
        })
        .collect();
    let outcomes = join_all(plans.iter().map(|plan| store.change_scopes(a, plan))).await;
    let mut done = 0;
    for outcome in outcomes {
        match outcome.unwrap_or_else(|e| panic!("change: {e}")) {
            Ok(_) => done += 1,
            Err(CatalogError::ScopeCycle(_)) => {}
            Err(other) => panic!("unexpected refusal: {other}"),
        }
    }
    assert!(done >= 1);
    let scopes = store.scopes(a).await.unwrap().unwrap();
    let implying: Vec<&str> = scopes
        .iter()
        .filter(|s| !s.spec.implies.is_empty())
        .map(|s| s.spec.name.as_str())
        .collect();
    assert_eq!(implying.len(), 1, "one direction won: {scopes:?}");
    assert_eq!(audited(store, a, AuditAction::ScopeUpdate).await, done);
}
