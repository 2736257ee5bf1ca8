//! The OAuth catalog through the real server: tools, scopes (from the defaults, without
//! cycles), the tools bound to agents, bad input, and another account's admin.

use std::collections::BTreeSet;

use d2_kernel::{AccountId, AuthContext, Credential, Grant, Scope, ScopeSet, TokenId};
use d2_oauth::{AgentSpec, AuthMethod};
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Reply, Tenant, TestApp};

async fn put(app: &TestApp, path: &str, token: &str, body: Value) -> Reply {
    app.send(app.request(Method::PUT, path, Some(token)).json(&body))
        .await
}

fn search_tool(name: &str) -> Value {
    json!({
        "name": name,
        "description": "Searches the web",
        "category": "search",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string", "minLength": 1}},
            "required": ["query"]
        },
        "required_scopes": ["tools:execute"]
    })
}

/// Creates a tool, a second after the one before (lists are newest first).
async fn create_tool(app: &TestApp, tenant: &Tenant, body: Value) -> Value {
    app.advance(1);
    app.post("/v1/tools", &tenant.token, body)
        .await
        .assert_status(201)
        .clone()
}

/// An agent of the tenant's account, registered in process (its routes are not this
/// suite's); its client id.
async fn agent(app: &TestApp, tenant: &Tenant, name: &str) -> String {
    let ctx = AuthContext {
        account_id: tenant.account_id.parse::<AccountId>().unwrap(),
        credential: Credential::ApiToken(TokenId::random()),
        user_id: None,
        acting_for: None,
        role: None,
        scopes: ScopeSet::new([Grant::Scope(Scope::Admin)]),
        app_name: None,
    };
    let spec = AgentSpec {
        name: name.to_owned(),
        description: None,
        scopes: vec!["tools:execute".into()],
        redirect_uris: vec![],
        resources: vec![],
        attributes: serde_json::Map::new(),
        auth_method: AuthMethod::ClientSecretBasic,
        jwks: None,
        jwks_uri: None,
        access_token_seconds: 3_600,
        refresh_token_seconds: None,
    };
    let (agent, _) = app.app.oauth.agents.register(&ctx, spec).await.unwrap();
    agent.client_id()
}

fn actions(audit: &[Value], action: &str) -> usize {
    audit.iter().filter(|r| r["action"] == action).count()
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn tools_are_created_listed_filtered_updated_turned_off_and_deleted() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let search = create_tool(&app, &tenant, search_tool("search.web")).await;
    assert_eq!(search["name"], "search.web");
    assert_eq!(search["active"], true);
    assert_eq!(search["required_scopes"], json!(["tools:execute"]));
    assert_eq!(search["parameters"]["required"], json!(["query"]));
    let id = search["tool_id"].as_str().unwrap();
    let minimal = create_tool(&app, &tenant, json!({"name": "fs/read", "active": false})).await;
    assert_eq!(minimal["parameters"], json!({"type": "object"}));
    assert_eq!(minimal["description"], Value::Null);
    create_tool(
        &app,
        &tenant,
        json!({"name": "mail.send", "category": "mail"}),
    )
    .await;

    // Newest first, in pages, filtered.
    let page = app.get("/v1/tools?limit=2", &tenant.token).await;
    assert_eq!(names(page.assert_status(200)), ["mail.send", "fs/read"]);
    let cursor = page.header("x-next-cursor").unwrap().to_owned();
    let rest = app
        .get(&format!("/v1/tools?limit=2&cursor={cursor}"), &tenant.token)
        .await;
    assert_eq!(names(rest.assert_status(200)), ["search.web"]);
    assert_eq!(rest.header("x-next-cursor"), None);
    let off = app.get("/v1/tools?active=false", &tenant.token).await;
    assert_eq!(names(off.assert_status(200)), ["fs/read"]);
    let searching = app
        .get("/v1/tools?category=search&active=true", &tenant.token)
        .await;
    assert_eq!(names(searching.assert_status(200)), ["search.web"]);

    let read = app.get(&format!("/v1/tools/{id}"), &tenant.token).await;
    assert_eq!(read.assert_status(200), &search);
    let mut changed = search_tool("search.web.v2");
    changed["required_scopes"] = json!(["tools:read"]);
    let updated = put(&app, &format!("/v1/tools/{id}"), &tenant.token, changed).await;
    let updated = updated.assert_status(200);
    assert_eq!(updated["name"], "search.web.v2");
    assert_eq!(updated["required_scopes"], json!(["tools:read"]));
    assert_eq!(updated["active"], true, "a replacement keeps the state");

    let path = format!("/v1/tools/{id}/deactivate");
    let off = app.post(&path, &tenant.token, Value::Null).await;
    assert_eq!(off.assert_status(200)["active"], false);
    app.post(&path, &tenant.token, Value::Null)
        .await
        .assert_status(200);
    let on = app
        .post(
            &format!("/v1/tools/{id}/activate"),
            &tenant.token,
            Value::Null,
        )
        .await;
    assert_eq!(on.assert_status(200)["active"], true);

    app.delete(&format!("/v1/tools/{id}"), &tenant.token)
        .await
        .assert_status(204);
    app.get(&format!("/v1/tools/{id}"), &tenant.token)
        .await
        .assert_problem(404, "tool_not_found");
    app.delete(&format!("/v1/tools/{id}"), &tenant.token)
        .await
        .assert_problem(404, "tool_not_found");

    let audit = app.audit(&tenant).await;
    assert_eq!(actions(&audit, "tool.create"), 3);
    assert_eq!(actions(&audit, "tool.update"), 1);
    assert_eq!(actions(&audit, "tool.deactivate"), 1, "again is no change");
    assert_eq!(actions(&audit, "tool.activate"), 1);
    assert_eq!(actions(&audit, "tool.delete"), 1);
    assert_eq!(
        actions(&audit, "scope.seed"),
        1,
        "the required scopes were checked"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_tool_input_is_a_clear_4xx_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let tool = create_tool(&app, &tenant, search_tool("search.web")).await;
    let id = tool["tool_id"].as_str().unwrap();
    let with = |field: &str, value: Value| {
        let mut body = search_tool("other.tool");
        body[field] = value;
        body
    };
    let cases = [
        (
            with("parameters", json!({"type": "nope"})),
            400,
            "invalid_tool_schema",
        ),
        (
            with(
                "parameters",
                json!({"properties": {"q": {"minLength": -1}}}),
            ),
            400,
            "invalid_tool_schema",
        ),
        (
            with(
                "parameters",
                json!({"type": "string", "pattern": "(unclosed"}),
            ),
            400,
            "invalid_tool_schema",
        ),
        (
            with("parameters", json!({"$ref": "https://example.com/s.json"})),
            400,
            "invalid_tool_schema",
        ),
        (
            with("parameters", json!("object")),
            400,
            "invalid_tool_schema",
        ),
        (
            with(
                "parameters",
                json!({"type": "object", "description": "x".repeat(70_000)}),
            ),
            413,
            "tool_schema_too_large",
        ),
        (with("name", json!("has space")), 400, "invalid_tool"),
        (with("name", json!("")), 400, "invalid_tool"),
        (with("name", json!("x".repeat(101))), 400, "invalid_tool"),
        (with("category", json!("not a token")), 400, "invalid_tool"),
        (
            with("required_scopes", json!(["no such scope"])),
            400,
            "invalid_tool",
        ),
        (
            with("required_scopes", json!(["ghost:scope", "openid"])),
            400,
            "unknown_scopes",
        ),
        (with("name", json!(7)), 400, "invalid_body"),
        (with("surprise", json!(true)), 400, "invalid_body"),
        (search_tool("search.web"), 409, "tool_name_taken"),
    ];
    for (body, status, code) in &cases {
        app.post("/v1/tools", &tenant.token, body.clone())
            .await
            .assert_problem(*status, code);
        let mut update = body.clone();
        if let Some(fields) = update.as_object_mut() {
            fields.remove("active");
        }
        if *code != "tool_name_taken" {
            put(&app, &format!("/v1/tools/{id}"), &tenant.token, update)
                .await
                .assert_problem(*status, code);
        }
    }
    let unknown = app
        .post(
            "/v1/tools",
            &tenant.token,
            with("required_scopes", json!(["ghost:scope", "openid"])),
        )
        .await;
    assert!(
        unknown.body["detail"]
            .as_str()
            .unwrap()
            .contains("`ghost:scope`"),
        "{}",
        unknown.text
    );
    // A body past the server's limit is refused unread.
    let huge = with("description", json!("x".repeat(300_000)));
    app.post("/v1/tools", &tenant.token, huge)
        .await
        .assert_problem(413, "payload_too_large");
    app.get("/v1/tools/not-a-uuid", &tenant.token)
        .await
        .assert_problem(400, "invalid_path");
    app.get("/v1/tools?category=bad%20one", &tenant.token)
        .await
        .assert_problem(400, "invalid_query");
    app.get("/v1/tools?active=maybe", &tenant.token)
        .await
        .assert_problem(400, "invalid_query");
    let taken = create_tool(&app, &tenant, search_tool("fs.read")).await;
    put(
        &app,
        &format!("/v1/tools/{}", taken["tool_id"].as_str().unwrap()),
        &tenant.token,
        search_tool("search.web"),
    )
    .await
    .assert_problem(409, "tool_name_taken");

    // Nothing of it was written.
    let listed = app.get("/v1/tools", &tenant.token).await;
    assert_eq!(names(listed.assert_status(200)), ["fs.read", "search.web"]);
    let read = app.get(&format!("/v1/tools/{id}"), &tenant.token).await;
    assert_eq!(read.assert_status(200), &tool);
    let audit = app.audit(&tenant).await;
    assert_eq!(actions(&audit, "tool.create"), 2);
    assert_eq!(actions(&audit, "tool.update"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn scopes_start_from_the_defaults_expand_and_never_make_a_cycle() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let token = &tenant.token;
    let listed = app.get("/v1/scopes", token).await;
    let defaults = names(listed.assert_status(200));
    for expected in [
        "openid",
        "tools:read",
        "tools:execute",
        "agents:write",
        "admin",
    ] {
        assert!(defaults.contains(&expected), "{defaults:?}");
    }
    let execute = app.get("/v1/scopes/tools:execute", token).await;
    assert_eq!(
        execute.assert_status(200)["expanded"],
        json!(["tools:execute", "tools:read"])
    );

    let created = app
        .post(
            "/v1/scopes",
            token,
            json!({"name": "reports:export", "description": "Export reports", "category": "reports", "implies": ["tools:read", "agents:read"]}),
        )
        .await;
    assert_eq!(
        created.assert_status(201)["implies"],
        json!(["agents:read", "tools:read"])
    );
    let expanded = app
        .post(
            "/v1/scopes/expand",
            token,
            json!({"scopes": ["reports:export", "openid"]}),
        )
        .await;
    assert_eq!(
        expanded.assert_status(200),
        &json!({"scopes": ["agents:read", "openid", "reports:export", "tools:read"]})
    );
    let registry = app.get("/v1/scopes/registry", token).await;
    let registry = registry.assert_status(200).as_array().unwrap().clone();
    let admin = registry.iter().find(|s| s["name"] == "admin").unwrap();
    let admin_expanded: BTreeSet<&str> = admin["expanded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(admin_expanded.contains("tools:read") && admin_expanded.contains("agents:read"));

    // Refusals, each with its code, none of them written.
    let bad = [
        (
            Method::POST,
            "/v1/scopes",
            json!({"name": "reports:export"}),
            409,
            "scope_name_taken",
        ),
        (
            Method::POST,
            "/v1/scopes",
            json!({"name": "with space"}),
            400,
            "invalid_scope_definition",
        ),
        (
            Method::POST,
            "/v1/scopes",
            json!({"name": "x", "category": "a b"}),
            400,
            "invalid_scope_definition",
        ),
        (
            Method::POST,
            "/v1/scopes",
            json!({"name": "x", "implies": ["ghost"]}),
            400,
            "unknown_scopes",
        ),
        (
            Method::POST,
            "/v1/scopes",
            json!({"name": "selfish", "implies": ["selfish"]}),
            409,
            "scope_cycle",
        ),
        (
            Method::POST,
            "/v1/scopes",
            json!({"implies": []}),
            400,
            "invalid_body",
        ),
        (
            Method::PUT,
            "/v1/scopes/tools:read",
            json!({"implies": ["admin"]}),
            409,
            "scope_cycle",
        ),
        (
            Method::PUT,
            "/v1/scopes/tools:read",
            json!({"implies": ["tools:read"]}),
            409,
            "scope_cycle",
        ),
        (
            Method::PUT,
            "/v1/scopes/tools:read",
            json!({"implies": ["nope"]}),
            400,
            "unknown_scopes",
        ),
        (
            Method::PUT,
            "/v1/scopes/ghost",
            json!({}),
            404,
            "scope_not_found",
        ),
        (
            Method::PUT,
            "/v1/scopes/tools:read",
            json!({"name": "renamed"}),
            400,
            "invalid_body",
        ),
        (
            Method::DELETE,
            "/v1/scopes/tools:read",
            Value::Null,
            409,
            "scope_implied",
        ),
        (
            Method::DELETE,
            "/v1/scopes/ghost",
            Value::Null,
            404,
            "scope_not_found",
        ),
        (
            Method::GET,
            "/v1/scopes/ghost",
            Value::Null,
            404,
            "scope_not_found",
        ),
        (
            Method::POST,
            "/v1/scopes/expand",
            json!({"scopes": ["openid", "nope", "also-nope"]}),
            400,
            "unknown_scopes",
        ),
        (
            Method::POST,
            "/v1/scopes/expand",
            json!({"scopes": "openid"}),
            400,
            "invalid_body",
        ),
    ];
    for (method, path, body, status, code) in bad {
        let mut request = app.request(method.clone(), path, Some(token));
        if !body.is_null() {
            request = request.json(&body);
        }
        let reply = app.send(request).await;
        reply.assert_problem(status, code);
        if code == "scope_cycle" && path.ends_with("tools:read") {
            let detail = reply.body["detail"].as_str().unwrap();
            assert!(detail.contains("tools:read -> "), "{detail}");
        }
        if code == "scope_implied" {
            let detail = reply.body["detail"].as_str().unwrap();
            assert!(
                detail.contains("`reports:export`") && detail.contains("`tools:execute`"),
                "{detail}"
            );
        }
        if path == "/v1/scopes/expand" && code == "unknown_scopes" {
            assert_eq!(reply.body["detail"], "unknown scopes: `also-nope`, `nope`");
        }
    }

    let updated = put(
        &app,
        "/v1/scopes/reports:export",
        token,
        json!({"description": "Reports", "implies": ["openid"]}),
    )
    .await;
    let updated = updated.assert_status(200);
    assert_eq!(updated["implies"], json!(["openid"]));
    assert_eq!(
        updated["category"],
        Value::Null,
        "a replacement clears what it omits"
    );
    app.delete("/v1/scopes/reports:export", token)
        .await
        .assert_status(204);
    app.get("/v1/scopes/reports:export", token)
        .await
        .assert_problem(404, "scope_not_found");
    // A deleted default stays deleted.
    app.delete("/v1/scopes/email", token)
        .await
        .assert_status(204);
    let listed = app.get("/v1/scopes", token).await;
    assert!(!names(listed.assert_status(200)).contains(&"email"));

    let audit = app.audit(&tenant).await;
    assert_eq!(actions(&audit, "scope.seed"), 1);
    assert_eq!(actions(&audit, "scope.create"), 1);
    assert_eq!(actions(&audit, "scope.update"), 1);
    assert_eq!(actions(&audit, "scope.delete"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn tools_are_bound_to_agents_of_their_own_account() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let token = &tenant.token;
    let client = agent(&app, &tenant, "Researcher").await;
    let tool = create_tool(&app, &tenant, search_tool("search.web")).await;
    let id = tool["tool_id"].as_str().unwrap();
    let other = create_tool(&app, &tenant, json!({"name": "fs.read"})).await;
    let other_id = other["tool_id"].as_str().unwrap();

    let tools = app.get(&format!("/v1/agents/{client}/tools"), token).await;
    assert_eq!(tools.assert_status(200), &json!([]));
    let bind = format!("/v1/agents/{client}/tools/{id}");
    let bound = app.post(&bind, token, Value::Null).await;
    assert_eq!(bound.assert_status(201)["tool_id"], id);
    app.post(&bind, token, Value::Null).await.assert_status(200);
    app.post(
        &format!("/v1/agents/{client}/tools/{other_id}"),
        token,
        Value::Null,
    )
    .await
    .assert_status(201);
    let tools = app.get(&format!("/v1/agents/{client}/tools"), token).await;
    assert_eq!(names(tools.assert_status(200)), ["fs.read", "search.web"]);

    app.delete(&bind, token).await.assert_status(204);
    app.delete(&bind, token)
        .await
        .assert_problem(404, "tool_not_bound");
    let ghost = uuid::Uuid::new_v4();
    app.post(
        &format!("/v1/agents/{ghost}/tools/{id}"),
        token,
        Value::Null,
    )
    .await
    .assert_problem(404, "agent_not_found");
    app.post(
        &format!("/v1/agents/{client}/tools/{ghost}"),
        token,
        Value::Null,
    )
    .await
    .assert_problem(404, "tool_not_found");
    app.get(&format!("/v1/agents/{ghost}/tools"), token)
        .await
        .assert_problem(404, "agent_not_found");
    app.post(&format!("/v1/agents/nope/tools/{id}"), token, Value::Null)
        .await
        .assert_problem(400, "invalid_path");

    // A deleted tool is unbound everywhere.
    app.delete(&format!("/v1/tools/{other_id}"), token)
        .await
        .assert_status(204);
    let tools = app.get(&format!("/v1/agents/{client}/tools"), token).await;
    assert_eq!(tools.assert_status(200), &json!([]));

    let audit = app.audit(&tenant).await;
    assert_eq!(actions(&audit, "agent.tool_bind"), 2);
    assert_eq!(actions(&audit, "agent.tool_unbind"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn another_accounts_admin_gets_404_on_every_catalog_route_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let mine = app.bootstrap().await;
    let theirs = app.bootstrap().await;
    let client = agent(&app, &theirs, "Theirs").await;
    let tool = create_tool(&app, &theirs, search_tool("search.web")).await;
    let id = tool["tool_id"].as_str().unwrap();
    app.post(
        &format!("/v1/agents/{client}/tools/{id}"),
        &theirs.token,
        Value::Null,
    )
    .await
    .assert_status(201);
    app.post("/v1/scopes", &theirs.token, json!({"name": "theirs:only"}))
        .await
        .assert_status(201);
    let their_audit = app.audit(&theirs).await;

    let routes = [
        (
            Method::GET,
            format!("/v1/tools/{id}"),
            Value::Null,
            "tool_not_found",
        ),
        (
            Method::PUT,
            format!("/v1/tools/{id}"),
            json!({"name": "pwned"}),
            "tool_not_found",
        ),
        (
            Method::DELETE,
            format!("/v1/tools/{id}"),
            Value::Null,
            "tool_not_found",
        ),
        (
            Method::POST,
            format!("/v1/tools/{id}/activate"),
            Value::Null,
            "tool_not_found",
        ),
        (
            Method::POST,
            format!("/v1/tools/{id}/deactivate"),
            Value::Null,
            "tool_not_found",
        ),
        (
            Method::GET,
            format!("/v1/agents/{client}/tools"),
            Value::Null,
            "agent_not_found",
        ),
        (
            Method::POST,
            format!("/v1/agents/{client}/tools/{id}"),
            Value::Null,
            "agent_not_found",
        ),
        (
            Method::DELETE,
            format!("/v1/agents/{client}/tools/{id}"),
            Value::Null,
            "agent_not_found",
        ),
        (
            Method::GET,
            "/v1/scopes/theirs:only".to_owned(),
            Value::Null,
            "scope_not_found",
        ),
        (
            Method::PUT,
            "/v1/scopes/theirs:only".to_owned(),
            json!({}),
            "scope_not_found",
        ),
        (
            Method::DELETE,
            "/v1/scopes/theirs:only".to_owned(),
            Value::Null,
            "scope_not_found",
        ),
    ];
    for (method, path, body, code) in routes {
        let mut request = app.request(method.clone(), &path, Some(&mine.token));
        if !body.is_null() {
            request = request.json(&body);
        }
        app.send(request).await.assert_problem(404, code);
    }
    // My own tool bound to their agent, or their tool to my agent: 404 too.
    let my_client = agent(&app, &mine, "Mine").await;
    let my_tool = create_tool(&app, &mine, search_tool("search.web")).await;
    let my_id = my_tool["tool_id"].as_str().unwrap();
    app.post(
        &format!("/v1/agents/{client}/tools/{my_id}"),
        &mine.token,
        Value::Null,
    )
    .await
    .assert_problem(404, "agent_not_found");
    app.post(
        &format!("/v1/agents/{my_client}/tools/{id}"),
        &mine.token,
        Value::Null,
    )
    .await
    .assert_problem(404, "tool_not_found");
    // Their names are not mine: expanding their scope is unknown here.
    app.post(
        "/v1/scopes/expand",
        &mine.token,
        json!({"scopes": ["theirs:only"]}),
    )
    .await
    .assert_problem(400, "unknown_scopes");
    let listed = app.get("/v1/tools", &mine.token).await;
    assert_eq!(names(listed.assert_status(200)), ["search.web"]);
    assert_ne!(listed.body[0]["tool_id"], tool["tool_id"]);

    // Nothing of theirs changed.
    let read = app.get(&format!("/v1/tools/{id}"), &theirs.token).await;
    assert_eq!(read.assert_status(200), &tool);
    let bound = app
        .get(&format!("/v1/agents/{client}/tools"), &theirs.token)
        .await;
    assert_eq!(names(bound.assert_status(200)), ["search.web"]);
    app.get("/v1/scopes/theirs:only", &theirs.token)
        .await
        .assert_status(200);
    assert_eq!(app.audit(&theirs).await, their_audit);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_catalog_change_through_one_replica_reaches_the_others_cache() {
    let app = TestApp::spawn().await;
    let other = app.replica(&[]).await;
    let tenant = app.bootstrap().await;
    let account: AccountId = tenant.account_id.parse().unwrap();
    // The other replica caches the catalog, then this one changes it.
    let known = other.app.oauth.scopes.known(account).await.unwrap();
    assert!(!known.contains("late:scope"));
    app.post("/v1/scopes", &tenant.token, json!({"name": "late:scope"}))
        .await
        .assert_status(201);
    for _ in 0..200 {
        if other
            .app
            .oauth
            .scopes
            .known(account)
            .await
            .unwrap()
            .contains("late:scope")
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("the other replica still serves the catalog it cached");
}
