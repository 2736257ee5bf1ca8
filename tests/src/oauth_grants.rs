//! What a token gets, through the real server: the agent's scopes expanded through the
//! account's scope catalog, decided by its access rules at issuance and at refresh; whether
//! a token may call a tool (`verify-tool-access`, `check_token_access`); a token verified
//! with its lineage (`verify`); and introspection of a token that no longer works, audited.

use serde_json::{Value, json};

use crate::harness::{Reply, Tenant, TestApp};
use crate::oauth::{Client, agent, form, metadata_reply};

fn tools_agent() -> Value {
    json!({
        "name": "Researcher",
        "scopes": ["tools:execute", "audit:read"],
        "resources": ["https://api.example/"],
        "attributes": {"team": "finance"},
    })
}

async fn token(app: &TestApp, tenant: &Tenant, client: &Client, fields: &[(&str, &str)]) -> Reply {
    let mut all = vec![("grant_type", "client_credentials")];
    all.extend_from_slice(fields);
    form(app, tenant, "token", Some(client), &all).await
}

async fn rule(app: &TestApp, tenant: &Tenant, body: Value) -> String {
    app.post("/v1/access-rules", &tenant.token, body)
        .await
        .assert_status(201)["rule_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn audit_of(app: &TestApp, tenant: &Tenant, action: &str) -> Vec<Value> {
    app.audit(tenant)
        .await
        .into_iter()
        .filter(|record| record["action"] == action)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn scopes_are_granted_with_what_they_imply_and_access_rules_deny_or_narrow_them() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let client = agent(&app, &tenant, tools_agent()).await;

    // Asked for nothing: every allowed scope, with what the catalog says they imply.
    let all = token(&app, &tenant, &client, &[]).await;
    assert_eq!(
        all.assert_status(200)["scope"],
        "audit:read tools:execute tools:read"
    );
    // A scope the agent has only through an implication may be asked for alone.
    let read = token(&app, &tenant, &client, &[("scope", "tools:read")]).await;
    assert_eq!(read.assert_status(200)["scope"], "tools:read");
    let refused = token(&app, &tenant, &client, &[("scope", "tools:read admin")]).await;
    assert_eq!(refused.status.as_u16(), 400, "{}", refused.text);
    assert_eq!(refused.body["error"], "invalid_scope");

    // A deny rule on the agent's team and resource refuses, naming itself.
    let deny = rule(
        &app,
        &tenant,
        json!({"name": "finance off the api", "effect": "deny", "priority": 10,
               "when": {"all": [
                   {"attr": "agent.attributes.team", "op": "eq", "value": "finance"},
                   {"attr": "request.resource", "op": "eq", "value": "https://api.example/"}]}}),
    )
    .await;
    let denied = token(&app, &tenant, &client, &[("scope", "tools:read")]).await;
    assert_eq!(denied.status.as_u16(), 400, "{}", denied.text);
    assert_eq!(denied.body["error"], "invalid_scope");
    assert!(
        denied.body["error_description"]
            .as_str()
            .unwrap()
            .contains("finance off the api"),
        "{}",
        denied.text
    );
    let denials = audit_of(&app, &tenant, "oauth.token_deny").await;
    let named = denials
        .iter()
        .find(|r| r["metadata"]["access_rule"]["name"] == "finance off the api")
        .expect("the denial is audited with its rule");
    assert_eq!(named["metadata"]["access_rule"]["id"], deny);
    assert_eq!(named["metadata"]["error"], "invalid_scope");

    // Without it, a narrowing rule keeps only its scopes, and the issuance names it.
    app.delete(&format!("/v1/access-rules/{deny}"), &tenant.token)
        .await
        .assert_status(204);
    rule(
        &app,
        &tenant,
        json!({"name": "reads only", "effect": "narrow", "scopes": ["tools:read"],
               "when": {"attr": "request.grant_type", "op": "eq", "value": "client_credentials"}}),
    )
    .await;
    let narrowed = token(&app, &tenant, &client, &[]).await;
    assert_eq!(narrowed.assert_status(200)["scope"], "tools:read");
    let issued = audit_of(&app, &tenant, "oauth.token_issue").await;
    assert_eq!(
        issued[0]["metadata"]["access_rule"]["name"], "reads only",
        "the newest issuance names its rule: {:?}",
        issued[0]
    );
    // A rule that narrows everything away denies.
    let only_audit = token(&app, &tenant, &client, &[("scope", "audit:read")]).await;
    assert_eq!(only_audit.status.as_u16(), 400, "{}", only_audit.text);
    assert_eq!(only_audit.body["error"], "invalid_scope");
    assert!(
        only_audit.text.contains("reads only"),
        "{}",
        only_audit.text
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refresh_is_decided_by_the_rules_of_the_moment() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let client = agent(&app, &tenant, tools_agent()).await;
    let first = token(&app, &tenant, &client, &[]).await;
    let refresh = first.assert_status(200)["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    rule(
        &app,
        &tenant,
        json!({"name": "no refresh", "effect": "deny",
               "when": {"attr": "request.grant_type", "op": "eq", "value": "refresh_token"}}),
    )
    .await;
    let refused = form(
        &app,
        &tenant,
        "token",
        Some(&client),
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    assert_eq!(refused.status.as_u16(), 400, "{}", refused.text);
    assert_eq!(refused.body["error"], "invalid_scope");
    assert!(refused.text.contains("no refresh"), "{}", refused.text);
}

/// A tool requiring `tools:execute`, bound to the agent `client`.
async fn bound_tool(app: &TestApp, tenant: &Tenant, client: &Client, name: &str) -> String {
    let tool = app
        .post(
            "/v1/tools",
            &tenant.token,
            json!({"name": name, "required_scopes": ["tools:execute"]}),
        )
        .await;
    let id = tool.assert_status(201)["tool_id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.post(
        &format!("/v1/agents/{}/tools/{id}", client.id),
        &tenant.token,
        json!({}),
    )
    .await
    .assert_status(201);
    id
}

async fn tool_access(
    app: &TestApp,
    tenant: &Tenant,
    caller: &Client,
    endpoint: &str,
    token: &str,
    tool: &str,
) -> Value {
    let reply = form(
        app,
        tenant,
        endpoint,
        Some(caller),
        &[("token", token), ("tool", tool)],
    )
    .await;
    reply.assert_status(200).clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn tool_access_is_answered_with_the_reason_and_the_rule_that_decided() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let client = agent(&app, &tenant, tools_agent()).await;
    let gateway = agent(&app, &tenant, json!({"name": "Gateway", "scopes": []})).await;
    let search = bound_tool(&app, &tenant, &client, "search").await;
    app.post(
        "/v1/tools",
        &tenant.token,
        json!({"name": "unbound", "required_scopes": []}),
    )
    .await
    .assert_status(201);
    let full = token(&app, &tenant, &client, &[]).await.assert_status(200)["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let read_only = token(&app, &tenant, &client, &[("scope", "tools:read")])
        .await
        .assert_status(200)["access_token"]
        .as_str()
        .unwrap()
        .to_owned();

    let allowed = tool_access(
        &app,
        &tenant,
        &gateway,
        "verify-tool-access",
        &full,
        "search",
    )
    .await;
    assert_eq!(allowed["allowed"], true, "{allowed}");
    assert_eq!(allowed["reason"], "allowed");
    assert_eq!(allowed["decided_by"], Value::Null);
    assert_eq!(allowed["client_id"], client.id.as_str());
    // The older name answers the same.
    let alias = tool_access(
        &app,
        &tenant,
        &gateway,
        "check_token_access",
        &full,
        "search",
    )
    .await;
    assert_eq!(alias, allowed);

    let cases = [
        (&full, "unbound", "not_bound"),
        (&full, "nowhere", "unknown_tool"),
        (&read_only, "search", "missing_scopes"),
        (&"not a token".to_owned(), "search", "inactive_token"),
    ];
    for (token, tool, reason) in cases {
        let answer = tool_access(&app, &tenant, &gateway, "verify-tool-access", token, tool).await;
        assert_eq!(answer["allowed"], false, "{tool}: {answer}");
        assert_eq!(answer["reason"], reason, "{tool}: {answer}");
    }
    let missing = tool_access(
        &app,
        &tenant,
        &gateway,
        "verify-tool-access",
        &read_only,
        "search",
    )
    .await;
    assert_eq!(missing["missing_scopes"], json!(["tools:execute"]));

    // A rule against the tool decides, and is named.
    let rule_id = rule(
        &app,
        &tenant,
        json!({"name": "no search", "effect": "deny",
               "when": {"attr": "request.tools", "op": "contains", "value": "search"}}),
    )
    .await;
    let denied = tool_access(
        &app,
        &tenant,
        &gateway,
        "verify-tool-access",
        &full,
        "search",
    )
    .await;
    assert_eq!(denied["allowed"], false, "{denied}");
    assert_eq!(denied["reason"], "denied_by_rule");
    assert_eq!(denied["decided_by"]["id"], rule_id.as_str());
    assert_eq!(denied["decided_by"]["name"], "no search");
    app.delete(&format!("/v1/access-rules/{rule_id}"), &tenant.token)
        .await
        .assert_status(204);

    // A deactivated tool is refused.
    app.post(
        &format!("/v1/tools/{search}/deactivate"),
        &tenant.token,
        json!({}),
    )
    .await
    .assert_status(200);
    let inactive = tool_access(
        &app,
        &tenant,
        &gateway,
        "verify-tool-access",
        &full,
        "search",
    )
    .await;
    assert_eq!(inactive["reason"], "tool_inactive", "{inactive}");

    // Bad input: no tool, no client authentication; another account's agent.
    let no_tool = form(
        &app,
        &tenant,
        "verify-tool-access",
        Some(&gateway),
        &[("token", &full)],
    )
    .await;
    assert_eq!(no_tool.status.as_u16(), 400, "{}", no_tool.text);
    assert_eq!(no_tool.body["error"], "invalid_request");
    let anonymous = form(
        &app,
        &tenant,
        "verify-tool-access",
        None,
        &[("token", &full), ("tool", "search")],
    )
    .await;
    assert_eq!(anonymous.status.as_u16(), 401, "{}", anonymous.text);
    assert_eq!(anonymous.body["error"], "invalid_client");
    let other = app.bootstrap().await;
    let stranger = agent(&app, &other, json!({"name": "Stranger", "scopes": []})).await;
    let foreign = form(
        &app,
        &tenant,
        "verify-tool-access",
        Some(&stranger),
        &[("token", &full), ("tool", "search")],
    )
    .await;
    assert_eq!(foreign.status.as_u16(), 401, "{}", foreign.text);
    let own_issuer = tool_access(
        &app,
        &other,
        &stranger,
        "verify-tool-access",
        &full,
        "search",
    )
    .await;
    assert_eq!(
        own_issuer["reason"], "inactive_token",
        "another account's token is not known"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_answers_a_token_with_its_lineage_and_what_is_wrong_with_it() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let client = agent(&app, &tenant, tools_agent()).await;
    let first = token(&app, &tenant, &client, &[("task_id", "task-7")]).await;
    let mut refresh = first.assert_status(200)["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut access = String::new();
    for _ in 0..2 {
        let next = form(
            &app,
            &tenant,
            "token",
            Some(&client),
            &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
        )
        .await;
        let body = next.assert_status(200);
        refresh = body["refresh_token"].as_str().unwrap().to_owned();
        access = body["access_token"].as_str().unwrap().to_owned();
    }
    let verified = form(
        &app,
        &tenant,
        "verify",
        Some(&client),
        &[("token", &access)],
    )
    .await;
    let body = verified.assert_status(200);
    assert_eq!(body["valid"], true, "{body}");
    assert_eq!(body["token"]["active"], true);
    assert_eq!(body["token"]["task_id"], "task-7");
    let lineage = body["lineage"].as_array().unwrap();
    assert_eq!(
        lineage.len(),
        2,
        "the two refresh tokens spent for it: {body}"
    );
    assert!(lineage.iter().all(|t| t["token_type"] == "refresh_token"));
    assert!(lineage.iter().all(|t| t["task_id"] == "task-7"));
    assert_eq!(lineage[1]["grant_type"], "client_credentials");
    assert_eq!(body["problems"], json!([]));

    // Revoked with its family, the token and its lineage say so.
    form(
        &app,
        &tenant,
        "revoke",
        Some(&client),
        &[("token", &refresh)],
    )
    .await
    .assert_status(200);
    let revoked = form(
        &app,
        &tenant,
        "verify",
        Some(&client),
        &[("token", &access)],
    )
    .await;
    let body = revoked.assert_status(200);
    assert_eq!(body["valid"], false);
    assert_eq!(body["token"], json!({"active": false}));
    assert!(
        body["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["problem"] == "revoked"),
        "{body}"
    );
    let unknown = form(&app, &tenant, "verify", Some(&client), &[("token", "junk")]).await;
    assert_eq!(
        unknown.assert_status(200)["problems"],
        json!([{"problem": "unknown_token"}])
    );
    let no_token = form(&app, &tenant, "verify", Some(&client), &[]).await;
    assert_eq!(no_token.status.as_u16(), 400, "{}", no_token.text);
    assert_eq!(no_token.body["error"], "invalid_request");
}

#[tokio::test(flavor = "multi_thread")]
async fn introspecting_a_token_that_no_longer_works_is_audited_and_junk_is_not() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let client = agent(&app, &tenant, tools_agent()).await;
    let access = token(&app, &tenant, &client, &[]).await.assert_status(200)["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    form(
        &app,
        &tenant,
        "revoke",
        Some(&client),
        &[("token", &access)],
    )
    .await
    .assert_status(200);
    for text in [access.as_str(), "junk"] {
        let answer = form(
            &app,
            &tenant,
            "introspect",
            Some(&client),
            &[("token", text)],
        )
        .await;
        if text == "junk" {
            assert_eq!(answer.assert_status(200), &json!({"active": false}));
        } else {
            crate::harness::assert_revoked(answer.assert_status(200), "client");
        }
    }
    let denials = audit_of(&app, &tenant, "oauth.introspect_deny").await;
    assert_eq!(denials.len(), 1, "{denials:?}");
    assert_eq!(denials[0]["metadata"]["reason"], "revoked");
    assert_eq!(denials[0]["metadata"]["client_id"], client.id.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn discovery_lists_the_accounts_scopes_and_knows_no_other_account() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let metadata = metadata_reply(&app, &tenant).await;
    let scopes = metadata.assert_status(200)["scopes_supported"]
        .as_array()
        .unwrap()
        .clone();
    assert!(scopes.contains(&json!("tools:execute")), "{scopes:?}");
    let nobody = uuid::Uuid::new_v4();
    let missing = app
        .get(
            &format!("/oauth/{nobody}/.well-known/openid-configuration"),
            "",
        )
        .await;
    assert_eq!(missing.status.as_u16(), 404, "{}", missing.text);
    assert_eq!(
        missing.body["code"], "account_not_found",
        "{}",
        missing.text
    );
}
