//! Rules of the catalog, against the in-memory store.

use std::collections::BTreeSet;
use std::sync::Arc;

use d2_audit::AuditAction;
use d2_audit::memory::MemoryAuditLog;
use d2_kernel::{
    AccountId, AuthContext, CacheSettings, Change, ChangeSubscriber as _, Code, Credential,
    ErrorCode as _, Grant, ManualClock, PageRequest, Scope, ScopeSet, TokenId,
};
use serde_json::json;

use super::graph::{Graph, closure, find_cycle};
use crate::memory::MemoryAgents;
use crate::*;

fn graph(edges: &[(&str, &[&str])]) -> Graph {
    edges
        .iter()
        .map(|(name, implies)| {
            (
                (*name).to_owned(),
                implies.iter().map(|i| (*i).to_owned()).collect(),
            )
        })
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

#[test]
fn closures_follow_implications_through_every_level() {
    let g = graph(&[
        ("admin", &["agents:write", "tools:execute"]),
        ("agents:write", &["agents:read"]),
        ("tools:execute", &["tools:read"]),
        ("tools:read", &[]),
        ("agents:read", &[]),
    ]);
    assert_eq!(
        closure(&g, ["admin"]),
        set(&[
            "admin",
            "agents:read",
            "agents:write",
            "tools:execute",
            "tools:read"
        ])
    );
    assert_eq!(closure(&g, ["tools:read"]), set(&["tools:read"]));
    assert_eq!(
        closure(&g, ["tools:execute", "agents:read"]),
        set(&["agents:read", "tools:execute", "tools:read"])
    );
    assert_eq!(find_cycle(&g), None);
}

#[test]
fn cycles_are_found_and_named_from_self_cycles_to_long_ones() {
    assert_eq!(
        find_cycle(&graph(&[("a", &["a"])])),
        Some(vec!["a".to_owned(), "a".to_owned()])
    );
    assert_eq!(
        find_cycle(&graph(&[("a", &["b"]), ("b", &["a"])])),
        Some(vec!["a".to_owned(), "b".to_owned(), "a".to_owned()])
    );
    // A long chain that closes on its middle: the cycle is named from where it starts.
    let names: Vec<String> = (0..300).map(|i| format!("s{i:03}")).collect();
    let mut g: Graph = names
        .windows(2)
        .map(|pair| (pair[0].clone(), set(&[pair[1].as_str()])))
        .collect();
    g.insert("s299".to_owned(), set(&["s150"]));
    let cycle = find_cycle(&g).unwrap();
    assert_eq!(cycle.len(), 151);
    assert_eq!(cycle.first().map(String::as_str), Some("s150"));
    assert_eq!(cycle.last().map(String::as_str), Some("s150"));
    // A very long chain without a cycle costs no stack.
    let names: Vec<String> = (0..20_000).map(|i| format!("n{i}")).collect();
    let chain: Graph = names
        .windows(2)
        .map(|pair| (pair[0].clone(), set(&[pair[1].as_str()])))
        .collect();
    assert_eq!(find_cycle(&chain), None);
    assert_eq!(closure(&chain, ["n0"]).len(), 20_000);
    // Diamonds are no cycles.
    assert_eq!(
        find_cycle(&graph(&[
            ("a", &["b", "c"]),
            ("b", &["d"]),
            ("c", &["d"]),
            ("d", &[])
        ])),
        None
    );
}

fn tool_spec(name: &str) -> ToolSpec {
    ToolSpec {
        name: name.to_owned(),
        description: Some("Searches the web".into()),
        category: Some("search".into()),
        parameters: json!({
            "type": "object",
            "properties": {"query": {"type": "string", "minLength": 1}},
            "required": ["query"],
        }),
        required_scopes: vec!["tools:execute".into(), "tools:execute".into()],
    }
}

fn code_of(result: Result<ToolSpec, CatalogError>) -> Code {
    result.unwrap_err().code()
}

#[test]
fn tool_specs_are_checked_and_normalised() {
    let spec = tool_spec("  search.web ").validate().unwrap();
    assert_eq!(spec.name, "search.web");
    assert_eq!(spec.required_scopes, ["tools:execute"]);
    for name in ["", "has space", "ünïcode", "semi;colon", &"x".repeat(101)] {
        assert_eq!(
            code_of(tool_spec(name).validate()),
            Code::InvalidTool,
            "{name:?}"
        );
    }
    for name in ["a", "fs/read", "mcp:github/issues.list", "v1-tool_x"] {
        assert!(tool_spec(name).validate().is_ok(), "{name}");
    }
    let mut bad = tool_spec("t");
    bad.category = Some("has space".into());
    assert_eq!(code_of(bad.validate()), Code::InvalidTool);
    let mut bad = tool_spec("t");
    bad.description = Some("line\nbreak".into());
    assert_eq!(code_of(bad.validate()), Code::InvalidTool);
    let mut bad = tool_spec("t");
    bad.required_scopes = vec!["with space".into()];
    assert_eq!(code_of(bad.validate()), Code::InvalidTool);
}

#[test]
fn parameters_must_be_a_usable_json_schema() {
    let with = |parameters: serde_json::Value| {
        let mut spec = tool_spec("t");
        spec.parameters = parameters;
        spec.validate()
    };
    assert!(with(ToolSpec::any_parameters()).is_ok());
    assert!(
        with(json!({"$schema": "http://json-schema.org/draft-07/schema#", "type": "object"}))
            .is_ok()
    );
    assert!(
        with(
            json!({"$defs": {"q": {"type": "string"}}, "properties": {"q": {"$ref": "#/$defs/q"}}})
        )
        .is_ok()
    );
    for (parameters, why) in [
        (json!({"type": "nope"}), "not a type"),
        (
            json!({"properties": {"q": {"minLength": -1}}}),
            "negative length",
        ),
        (json!({"required": "query"}), "required is a list"),
        (json!([{"type": "object"}]), "not an object"),
        (json!(true), "a boolean schema takes no parameters"),
        (
            json!({"type": "string", "pattern": "(unclosed"}),
            "not a regular expression",
        ),
        (
            json!({"$ref": "https://example.com/schema.json"}),
            "nothing is fetched",
        ),
        (json!({"$ref": "#/$defs/missing"}), "a reference to nothing"),
        (
            json!({"$schema": "https://example.com/my-meta", "type": "object"}),
            "unknown draft",
        ),
    ] {
        let error = with(parameters).unwrap_err();
        assert_eq!(error.code(), Code::InvalidToolSchema, "{why}: {error}");
    }
    let large = json!({"type": "object", "description": "x".repeat(70_000)});
    assert_eq!(with(large).unwrap_err().code(), Code::ToolSchemaTooLarge);
}

#[test]
fn scope_specs_are_rfc_6749_tokens() {
    let spec = |name: &str| ScopeSpec {
        name: name.to_owned(),
        description: None,
        category: None,
        implies: vec![],
    };
    for name in ["tools:read", "openid", "a.b/c", "x!"] {
        assert!(spec(name).validate().is_ok(), "{name}");
    }
    for name in [
        "",
        "with space",
        "quote\"",
        "back\\slash",
        "é",
        &"s".repeat(129),
    ] {
        assert_eq!(
            spec(name).validate().unwrap_err().code(),
            Code::InvalidScopeDefinition,
            "{name:?}"
        );
    }
    let mut many = spec("a");
    many.implies = (0..51).map(|i| format!("s{i}")).collect();
    assert_eq!(
        many.validate().unwrap_err().code(),
        Code::InvalidScopeDefinition
    );
}

#[test]
fn default_scopes_are_checked_as_a_whole() {
    let defaults = DefaultScopes::from_yaml(
        "scopes:\n  - name: admin\n    implies: [tools:read]\n  - name: tools:read\n    description: Read tools\n    category: tools\n",
    )
    .unwrap();
    assert_eq!(defaults.len(), 2);
    for (yaml, problem) in [
        (
            "scopes:\n  - name: a\n    implies: [b]\n",
            "unknown scopes: `b`",
        ),
        (
            "scopes:\n  - name: a\n    implies: [b]\n  - name: b\n    implies: [a]\n",
            "a -> b -> a",
        ),
        ("scopes:\n  - name: a\n    implies: [a]\n", "a -> a"),
        ("scopes:\n  - name: a\n  - name: a\n", "listed twice"),
        ("scopes:\n  - name: bad name\n", "not a scope name"),
        (
            "scopes:\n  - name: a\n    impliez: []\n",
            "not a scope list",
        ),
        ("nonsense", "not a scope list"),
    ] {
        let error = DefaultScopes::from_yaml(yaml).unwrap_err();
        assert!(error.0.contains(problem), "{yaml:?}: {error}");
    }
}

struct World {
    store: Arc<MemoryAgents>,
    audit: Arc<MemoryAuditLog>,
    scopes: Arc<ScopeCatalog>,
    tools: ToolService,
    agents: AgentService,
    account: AccountId,
}

fn shipped() -> DefaultScopes {
    DefaultScopes::from_yaml(
        "scopes:
  - name: openid
  - name: tools:read
    category: tools
  - name: tools:execute
    category: tools
    implies: [tools:read]
  - name: agents:read
  - name: agents:write
    implies: [agents:read]
  - name: admin
    implies: [agents:write, tools:execute]
",
    )
    .unwrap()
}

fn world() -> World {
    let clock = Arc::new(ManualClock::starting_now());
    let audit = Arc::new(MemoryAuditLog::default());
    let store = Arc::new(MemoryAgents::new(audit.clone()));
    let scopes = Arc::new(ScopeCatalog::new(
        store.clone(),
        clock.clone(),
        shipped(),
        CacheSettings::default(),
    ));
    World {
        tools: ToolService::new(
            store.clone(),
            scopes.clone(),
            clock.clone(),
            CacheSettings::default(),
        ),
        agents: AgentService::new(
            store.clone(),
            Arc::new(crate::AgentCache::new(
                store.clone(),
                CacheSettings::default(),
            )),
            Arc::new(d2_kernel::Pepper::new(&[9; 32]).unwrap()),
            clock,
            chrono::Duration::hours(1),
        ),
        store,
        audit,
        scopes,
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

impl World {
    fn audited(&self, action: AuditAction) -> usize {
        self.audit
            .all()
            .iter()
            .filter(|r| r.entry.action == action)
            .count()
    }

    fn new_scope(&self, name: &str, implies: &[&str]) -> ScopeSpec {
        ScopeSpec {
            name: name.to_owned(),
            description: Some(format!("{name} things")),
            category: None,
            implies: implies.iter().map(|i| (*i).to_owned()).collect(),
        }
    }

    fn patch(implies: &[&str]) -> ScopePatch {
        ScopePatch {
            description: None,
            category: None,
            implies: implies.iter().map(|i| (*i).to_owned()).collect(),
        }
    }
}

#[tokio::test]
async fn a_catalog_starts_from_the_defaults_once_and_then_is_the_accounts_own() {
    let w = world();
    let known = w.scopes.known(w.account).await.unwrap();
    assert_eq!(known.len(), 6);
    assert_eq!(
        known.get("admin").unwrap().expanded,
        set(&[
            "admin",
            "agents:read",
            "agents:write",
            "tools:execute",
            "tools:read"
        ])
    );
    assert_eq!(w.audited(AuditAction::ScopeSeed), 1);
    // Deleted defaults stay deleted: a catalog is seeded once.
    let ctx = admin(w.account);
    w.scopes.delete(&ctx, "openid").await.unwrap();
    w.scopes.on_change(&Change::Resync);
    assert!(!w.scopes.known(w.account).await.unwrap().contains("openid"));
    assert_eq!(w.audited(AuditAction::ScopeSeed), 1);
    assert_eq!(w.audited(AuditAction::ScopeDelete), 1);
}

#[tokio::test]
async fn scopes_are_created_updated_and_deleted_without_ever_making_a_cycle() {
    let w = world();
    let ctx = admin(w.account);
    let created = w
        .scopes
        .create(&ctx, w.new_scope("reports:export", &["tools:read"]))
        .await
        .unwrap();
    assert_eq!(created.spec.implies, ["tools:read"]);
    assert_eq!(
        w.scopes
            .expand(w.account, ["reports:export", "openid"])
            .await
            .unwrap(),
        set(&["openid", "reports:export", "tools:read"])
    );
    let refusal = |result: Result<OAuthScope, CatalogError>| result.unwrap_err().code();
    assert_eq!(
        refusal(
            w.scopes
                .create(&ctx, w.new_scope("reports:export", &[]))
                .await
        ),
        Code::ScopeNameTaken
    );
    assert_eq!(
        refusal(
            w.scopes
                .create(&ctx, w.new_scope("x", &["ghost", "tools:read"]))
                .await
        ),
        Code::UnknownScopes
    );
    assert_eq!(
        refusal(
            w.scopes
                .create(&ctx, w.new_scope("selfish", &["selfish"]))
                .await
        ),
        Code::ScopeCycle
    );
    // tools:read -> admin -> tools:execute -> tools:read.
    let cycle = w
        .scopes
        .update(&ctx, "tools:read", World::patch(&["admin"]))
        .await
        .unwrap_err();
    assert_eq!(cycle.code(), Code::ScopeCycle);
    assert!(cycle.to_string().contains("admin -> "), "{cycle}");
    assert_eq!(
        refusal(w.scopes.update(&ctx, "ghost", World::patch(&[])).await),
        Code::ScopeNotFound
    );
    let updated = w
        .scopes
        .update(&ctx, "reports:export", World::patch(&["agents:read"]))
        .await
        .unwrap();
    assert_eq!(updated.created_at, created.created_at);
    assert_eq!(
        w.scopes.get(&ctx, "reports:export").await.unwrap().expanded,
        set(&["agents:read", "reports:export"])
    );
    // A scope others imply stays until they no longer do.
    let implied = w.scopes.delete(&ctx, "agents:read").await.unwrap_err();
    assert_eq!(implied.code(), Code::ScopeImplied);
    assert!(
        implied
            .to_string()
            .contains("`agents:write`, `reports:export`"),
        "{implied}"
    );
    assert_eq!(
        w.scopes.delete(&ctx, "ghost").await.unwrap_err().code(),
        Code::ScopeNotFound
    );
    let unknown = w
        .scopes
        .expand(w.account, ["openid", "nope", "also-nope"])
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::UnknownScopes);
    assert_eq!(unknown.to_string(), "unknown scopes: `also-nope`, `nope`");
    assert_eq!(w.audited(AuditAction::ScopeCreate), 1);
    assert_eq!(w.audited(AuditAction::ScopeUpdate), 1);
    assert_eq!(w.audited(AuditAction::ScopeDelete), 0);
}

#[tokio::test]
async fn a_cached_catalog_is_dropped_by_a_change_of_another_replica() {
    let w = world();
    let ctx = admin(w.account);
    // A second replica's catalog over the same store.
    let clock = Arc::new(ManualClock::starting_now());
    let other = ScopeCatalog::new(w.store.clone(), clock, shipped(), CacheSettings::default());
    assert!(!other.known(w.account).await.unwrap().contains("new"));
    w.scopes
        .create(&ctx, w.new_scope("new", &[]))
        .await
        .unwrap();
    assert!(
        w.scopes.known(w.account).await.unwrap().contains("new"),
        "its own write, at once"
    );
    assert!(
        !other.known(w.account).await.unwrap().contains("new"),
        "cached"
    );
    other.on_change(&Change::Catalog(AccountId::random()));
    assert!(
        !other.known(w.account).await.unwrap().contains("new"),
        "another account's change"
    );
    other.on_change(&Change::Catalog(w.account));
    assert!(other.known(w.account).await.unwrap().contains("new"));
}

#[tokio::test]
async fn tools_are_managed_bound_to_agents_and_read_by_name() {
    let w = world();
    let ctx = admin(w.account);
    let tool = w
        .tools
        .create(&ctx, tool_spec("search.web"), true)
        .await
        .unwrap();
    assert_eq!(tool.spec.required_scopes, ["tools:execute"]);
    assert_eq!(
        w.tools
            .create(&ctx, tool_spec("search.web"), true)
            .await
            .unwrap_err()
            .code(),
        Code::ToolNameTaken
    );
    let mut ghostly = tool_spec("ghost.tool");
    ghostly.required_scopes = vec!["ghost".into()];
    assert_eq!(
        w.tools
            .create(&ctx, ghostly, true)
            .await
            .unwrap_err()
            .code(),
        Code::UnknownScopes
    );
    let other = w
        .tools
        .create(&ctx, tool_spec("fs.read"), false)
        .await
        .unwrap();
    assert_eq!(
        w.tools
            .update(&ctx, other.id, tool_spec("search.web"))
            .await
            .unwrap_err()
            .code(),
        Code::ToolNameTaken
    );
    let listed = w
        .tools
        .list(
            &ctx,
            &ToolFilter {
                active: Some(false),
                ..ToolFilter::default()
            },
            &PageRequest::first(10),
        )
        .await
        .unwrap();
    assert_eq!(listed.items, std::slice::from_ref(&other));
    let activated = w.tools.set_active(&ctx, other.id, true).await.unwrap();
    assert!(activated.active);
    w.tools.set_active(&ctx, other.id, true).await.unwrap();
    assert_eq!(w.audited(AuditAction::ToolActivate), 1, "again is a no-op");

    // Bindings.
    let (agent, _) = w
        .agents
        .register(
            &ctx,
            AgentSpec {
                name: "Researcher".into(),
                description: None,
                scopes: vec![],
                redirect_uris: vec![],
                resources: vec![],
                attributes: serde_json::Map::new(),
                auth_method: AuthMethod::ClientSecretBasic,
                jwks: None,
                jwks_uri: None,
                access_token_seconds: 3_600,
                refresh_token_seconds: None,
            },
        )
        .await
        .unwrap();
    assert!(
        w.tools
            .agent_tools(w.account, agent.id)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(w.tools.bind(&ctx, agent.id, tool.id).await.unwrap());
    assert!(
        !w.tools.bind(&ctx, agent.id, tool.id).await.unwrap(),
        "idempotent"
    );
    assert_eq!(w.audited(AuditAction::AgentToolBind), 1);
    assert_eq!(
        w.tools
            .agent_tools(w.account, agent.id)
            .await
            .unwrap()
            .as_slice(),
        std::slice::from_ref(&tool)
    );
    assert_eq!(
        w.tools.by_name(w.account, "search.web").await.unwrap(),
        Some(tool.clone())
    );
    assert_eq!(w.tools.by_name(w.account, "nope").await.unwrap(), None);
    assert_eq!(w.tools.by_name(w.account, "bad name").await.unwrap(), None);
    assert_eq!(
        w.tools
            .unbind(&ctx, agent.id, other.id)
            .await
            .unwrap_err()
            .code(),
        Code::ToolNotBound
    );
    w.tools.delete(&ctx, tool.id).await.unwrap();
    assert!(
        w.tools
            .agent_tools(w.account, agent.id)
            .await
            .unwrap()
            .is_empty(),
        "gone with the tool"
    );
    assert_eq!(
        w.tools
            .bind(&ctx, agent.id, tool.id)
            .await
            .unwrap_err()
            .code(),
        Code::ToolNotFound
    );
    assert_eq!(
        w.tools
            .agent_tools(w.account, AgentId::random())
            .await
            .unwrap_err()
            .code(),
        Code::AgentNotFound
    );
}

#[tokio::test]
async fn another_account_reaches_nothing_and_only_admins_manage() {
    let w = world();
    let ctx = admin(w.account);
    let tool = w
        .tools
        .create(&ctx, tool_spec("search.web"), true)
        .await
        .unwrap();
    let stranger = admin(AccountId::random());
    assert_eq!(
        w.tools.get(&stranger, tool.id).await.unwrap_err().code(),
        Code::ToolNotFound
    );
    assert_eq!(
        w.tools.delete(&stranger, tool.id).await.unwrap_err().code(),
        Code::ToolNotFound
    );
    assert_eq!(
        w.tools
            .set_active(&stranger, tool.id, false)
            .await
            .unwrap_err()
            .code(),
        Code::ToolNotFound
    );
    assert_eq!(
        w.tools
            .update(&stranger, tool.id, tool_spec("x"))
            .await
            .unwrap_err()
            .code(),
        Code::ToolNotFound
    );
    assert!(w.tools.get(&ctx, tool.id).await.unwrap().active);
    let reader = caller(w.account, &[Grant::Scope(Scope::PolicyRead)]);
    assert_eq!(
        w.tools
            .create(&reader, tool_spec("t"), true)
            .await
            .unwrap_err()
            .code(),
        Code::InsufficientScope
    );
    assert_eq!(
        w.scopes.list(&reader).await.unwrap_err().code(),
        Code::InsufficientScope
    );
}
