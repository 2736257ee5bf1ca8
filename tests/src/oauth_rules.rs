//! Principals and access rules over HTTP: their management (JSON and YAML rules), what is
//! refused and how, explain, tenant isolation on every route, and a rule change reaching
//! another replica within a second.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Reply, Tenant, TestApp};

async fn put(app: &TestApp, path: &str, token: &str, body: Value) -> Reply {
    app.send(app.request(Method::PUT, path, Some(token)).json(&body))
        .await
}

/// A body sent as it is, with its content type.
async fn raw(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    content_type: &str,
    body: impl Into<String>,
) -> Reply {
    app.send(
        app.request(method, path, Some(token))
            .header("Content-Type", content_type)
            .body(body.into()),
    )
    .await
}

fn actions(audit: &[Value]) -> Vec<String> {
    audit
        .iter()
        .map(|record| record["action"].as_str().unwrap().to_owned())
        .collect()
}

async fn principal(app: &TestApp, tenant: &Tenant, body: Value) -> Value {
    app.post("/v1/users", &tenant.token, body)
        .await
        .assert_status(201)
        .clone()
}

async fn rule(app: &TestApp, tenant: &Tenant, body: Value) -> Value {
    app.post("/v1/access-rules", &tenant.token, body)
        .await
        .assert_status(201)
        .clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn principals_are_created_listed_replaced_and_deleted_with_unique_usernames() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let ada = principal(
        &app,
        &tenant,
        json!({"username": " ada ", "email": "ada@example.com", "display_name": "Ada",
               "attributes": {"department": "finance", "level": 3}}),
    )
    .await;
    assert_eq!(ada["username"], "ada");
    assert_eq!(ada["active"], true);
    assert_eq!(ada["attributes"]["level"], 3);
    let id = ada["principal_id"].as_str().unwrap().to_owned();
    // Lists are newest first: the next principal is a second younger.
    app.advance(1);
    app.get(&format!("/v1/users/{id}"), &tenant.token)
        .await
        .assert_status(200);
    app.post("/v1/users", &tenant.token, json!({"username": "ada"}))
        .await
        .assert_problem(409, "username_taken");
    let grace = principal(&app, &tenant, json!({"username": "grace", "active": false})).await;
    assert_eq!(grace["attributes"], json!({}));

    // Newest first, paged, filtered by state.
    let first = app.get("/v1/users?limit=1", &tenant.token).await;
    assert_eq!(first.assert_status(200)[0]["username"], "grace");
    let cursor = first.header("x-next-cursor").unwrap().to_owned();
    let rest = app
        .get(&format!("/v1/users?limit=1&cursor={cursor}"), &tenant.token)
        .await;
    assert_eq!(rest.assert_status(200)[0]["username"], "ada");
    let active = app.get("/v1/users?active=true", &tenant.token).await;
    assert_eq!(active.assert_status(200).as_array().unwrap().len(), 1);
    assert_eq!(active.body[0]["username"], "ada");
    app.get("/v1/users?active=maybe", &tenant.token)
        .await
        .assert_problem(400, "invalid_query");

    // Replaced whole; the username stays unique.
    let replaced = put(
        &app,
        &format!("/v1/users/{id}"),
        &tenant.token,
        json!({"username": "ada.l", "active": false}),
    )
    .await;
    let body = replaced.assert_status(200);
    assert_eq!(body["username"], "ada.l");
    assert_eq!(body["email"], Value::Null);
    assert_eq!(body["attributes"], json!({}));
    put(
        &app,
        &format!("/v1/users/{id}"),
        &tenant.token,
        json!({"username": "grace"}),
    )
    .await
    .assert_problem(409, "username_taken");

    app.delete(&format!("/v1/users/{id}"), &tenant.token)
        .await
        .assert_status(204);
    app.get(&format!("/v1/users/{id}"), &tenant.token)
        .await
        .assert_problem(404, "principal_not_found");
    let audit = actions(&app.audit(&tenant).await);
    for action in ["principal.create", "principal.update", "principal.delete"] {
        assert!(audit.iter().any(|a| a == action), "{action}: {audit:?}");
    }
    // The person's own route is not a principal's.
    app.get("/v1/users/me", &tenant.token)
        .await
        .assert_problem(403, "user_session_required");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_principals_are_refused_with_their_code_and_nothing_is_written() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let audit_before = app.audit(&tenant).await.len();
    let oversized: serde_json::Map<String, Value> =
        (0..65).map(|i| (format!("k{i}"), json!(i))).collect();
    for (body, code) in [
        (json!({"username": ""}), "invalid_principal"),
        (json!({"username": "u".repeat(201)}), "invalid_principal"),
        (
            json!({"username": "a", "email": "not-an-email"}),
            "invalid_principal",
        ),
        (
            json!({"username": "a", "attributes": oversized}),
            "invalid_principal",
        ),
        (
            json!({"username": "a", "attributes": {"blob": "x".repeat(17_000)}}),
            "invalid_principal",
        ),
        (
            json!({"username": "a", "attributes": [1, 2]}),
            "invalid_body",
        ),
        (json!({"username": "a", "role": "admin"}), "invalid_body"),
        (json!({"email": "a@b.c"}), "invalid_body"),
    ] {
        app.post("/v1/users", &tenant.token, body.clone())
            .await
            .assert_problem(400, code);
    }
    app.get("/v1/users/not-a-uuid", &tenant.token)
        .await
        .assert_problem(400, "invalid_path");
    assert_eq!(app.audit(&tenant).await.len(), audit_before);
    let listed = app.get("/v1/users", &tenant.token).await;
    assert_eq!(listed.assert_status(200), &json!([]));
}

const NIGHT_YAML: &str = "\
name: no exports at night
description: Reports are not exported outside office hours
priority: 5
effect: deny
when:
  all:
    - attr: request.scopes
      op: contains
      value: reports.export
    - any:
        - attr: time.hour
          op: lt
          value: 7
        - attr: time.weekday
          op: in
          value: [sat, sun]
";

#[tokio::test(flavor = "multi_thread")]
async fn rules_are_written_as_json_or_yaml_read_back_replaced_and_deleted() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let from_yaml = raw(
        &app,
        Method::POST,
        "/v1/access-rules",
        &tenant.token,
        "application/yaml",
        NIGHT_YAML,
    )
    .await;
    let night = from_yaml.assert_status(201).clone();
    assert_eq!(night["name"], "no exports at night");
    assert_eq!(night["effect"], "deny");
    assert_eq!(night["priority"], 5);
    assert_eq!(night["enabled"], true);
    assert_eq!(
        night["when"]["all"][1]["any"][1]["value"],
        json!(["sat", "sun"])
    );
    let night_id = night["rule_id"].as_str().unwrap().to_owned();
    app.advance(1);

    let narrow = rule(
        &app,
        &tenant,
        json!({"name": "finance reads", "effect": "narrow", "scopes": ["reports.read"],
               "when": {"attr": "principal.attributes.department", "op": "eq", "value": "finance"}}),
    )
    .await;
    assert_eq!(narrow["scopes"], json!(["reports.read"]));
    app.post(
        "/v1/access-rules",
        &tenant.token,
        json!({"name": "finance reads", "effect": "deny"}),
    )
    .await
    .assert_problem(409, "access_rule_name_taken");

    let read = app
        .get(&format!("/v1/access-rules/{night_id}"), &tenant.token)
        .await;
    assert_eq!(read.assert_status(200), &night);
    let listed = app.get("/v1/access-rules", &tenant.token).await;
    let names: Vec<&str> = listed
        .assert_status(200)
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["finance reads", "no exports at night"]);

    // Replaced by a YAML document; a clash with another rule's name is refused.
    let replaced = raw(
        &app,
        Method::PUT,
        &format!("/v1/access-rules/{night_id}"),
        &tenant.token,
        "application/x-yaml",
        "name: nights off\neffect: deny\nenabled: false\n",
    )
    .await;
    let body = replaced.assert_status(200);
    assert_eq!(body["name"], "nights off");
    assert_eq!(body["enabled"], false);
    assert_eq!(body["when"], Value::Null);
    put(
        &app,
        &format!("/v1/access-rules/{night_id}"),
        &tenant.token,
        json!({"name": "finance reads", "effect": "deny"}),
    )
    .await
    .assert_problem(409, "access_rule_name_taken");

    app.delete(&format!("/v1/access-rules/{night_id}"), &tenant.token)
        .await
        .assert_status(204);
    app.get(&format!("/v1/access-rules/{night_id}"), &tenant.token)
        .await
        .assert_problem(404, "access_rule_not_found");
    let audit = actions(&app.audit(&tenant).await);
    for action in [
        "access_rule.create",
        "access_rule.update",
        "access_rule.delete",
    ] {
        assert!(audit.iter().any(|a| a == action), "{action}: {audit:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_rules_are_refused_pointing_at_the_offending_node_and_nothing_is_written() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let audit_before = app.audit(&tenant).await.len();
    let refused = |reply: Reply, words: &str| {
        reply.assert_problem(400, "invalid_access_rule");
        let detail = reply.body["detail"].as_str().unwrap();
        assert!(detail.contains(words), "`{words}` not in {detail}");
    };
    let post = |content_type: &'static str, body: String| {
        raw(
            &app,
            Method::POST,
            "/v1/access-rules",
            &tenant.token,
            content_type,
            body,
        )
    };
    refused(
        post("application/json", "{\"name\": ".into()).await,
        "not valid JSON",
    );
    refused(
        post("application/yaml", "name: [unclosed\n".into()).await,
        "not valid YAML",
    );
    let leaf = |attr: &str, op: &str, value: Value| {
        json!({"name": "r", "effect": "deny",
               "when": {"all": [{"attr": "agent.name", "op": "eq", "value": "a"},
                                {"attr": attr, "op": op, "value": value}]}})
        .to_string()
    };
    refused(
        post("application/json", leaf("agent.name", "like", json!("a"))).await,
        "at `/when/all/1/op`: unknown op `like`",
    );
    refused(
        post("application/json", leaf("agent.colour", "eq", json!("a"))).await,
        "at `/when/all/1/attr`: unknown attribute",
    );
    refused(
        post("application/json", leaf("agent.name", "gt", json!(3))).await,
        "at `/when/all/1/op`",
    );
    refused(
        post("application/json", leaf("time.hour", "eq", json!("noon"))).await,
        "at `/when/all/1/value`",
    );
    let deep = (1..10).fold(
        json!({"attr": "agent.name", "op": "eq", "value": "a"}),
        |inner, _| json!({"not": inner}),
    );
    refused(
        post(
            "application/json",
            json!({"name": "deep", "effect": "deny", "when": deep}).to_string(),
        )
        .await,
        "at most 8 levels",
    );
    let wide: Vec<Value> = (0..101)
        .map(|_| json!({"attr": "agent.name", "op": "eq", "value": "a"}))
        .collect();
    refused(
        post(
            "application/json",
            json!({"name": "wide", "effect": "deny", "when": {"any": wide}}).to_string(),
        )
        .await,
        "at most 100 conditions",
    );
    refused(
        post(
            "application/json",
            json!({"name": "n", "effect": "narrow"}).to_string(),
        )
        .await,
        "at `/scopes`",
    );
    post("text/plain", "name: x".into())
        .await
        .assert_problem(415, "unsupported_media_type");
    let too_big = format!("{{\"name\": \"{}\"}}", "x".repeat(70_000));
    post("application/json", too_big)
        .await
        .assert_problem(413, "payload_too_large");
    // A NUL in YAML's own escape is found after parsing.
    refused(
        post("application/yaml", "name: \"a\\0b\"\neffect: deny\n".into()).await,
        "/name",
    );
    assert_eq!(app.audit(&tenant).await.len(), audit_before);
    let listed = app.get("/v1/access-rules", &tenant.token).await;
    assert_eq!(listed.assert_status(200), &json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn explain_answers_the_decision_the_deciding_rule_and_the_trace() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let ada = principal(
        &app,
        &tenant,
        json!({"username": "ada", "attributes": {"department": "finance"}}),
    )
    .await;
    let night = raw(
        &app,
        Method::POST,
        "/v1/access-rules",
        &tenant.token,
        "application/yaml",
        NIGHT_YAML,
    )
    .await
    .assert_status(201)
    .clone();
    let narrow = rule(
        &app,
        &tenant,
        json!({"name": "finance reads", "priority": 1, "effect": "narrow",
               "scopes": ["reports.read", "reports.export"],
               "when": {"attr": "principal.attributes.department", "op": "eq", "value": "finance"}}),
    )
    .await;
    let agent = uuid::Uuid::new_v4().to_string();
    let explain = |principal: Value, now: &str| {
        app.post(
            "/v1/access-rules/explain",
            &tenant.token,
            json!({"agent": {"id": agent, "name": "reporter"}, "principal": principal,
                   "scopes": ["reports.read", "reports.export", "mail.send"], "now": now}),
        )
    };
    // A Wednesday afternoon: the finance principal's scopes are narrowed.
    let ada_stored = json!({"id": ada["principal_id"]});
    let day = explain(ada_stored.clone(), "2026-12-02T14:00:00Z").await;
    let decision = day.assert_status(200);
    assert_eq!(decision["allowed"], true);
    assert_eq!(decision["reason"], "narrowed");
    assert_eq!(
        decision["scopes"],
        json!(["reports.export", "reports.read"])
    );
    assert_eq!(decision["decided_by"]["rule_id"], narrow["rule_id"]);
    assert_eq!(decision["trace"][0]["name"], "finance reads");
    assert_eq!(decision["trace"][0]["step"], "matched");
    assert_eq!(decision["trace"][0]["removed"], json!(["mail.send"]));
    assert_eq!(decision["trace"][1]["name"], "no exports at night");
    assert_eq!(decision["trace"][1]["matched"], false);
    // At night the deny decides.
    let night_reply = explain(ada_stored, "2026-12-02T03:00:00Z").await;
    let decision = night_reply.assert_status(200);
    assert_eq!(decision["allowed"], false);
    assert_eq!(decision["reason"], "denied");
    assert_eq!(decision["scopes"], json!([]));
    assert_eq!(decision["decided_by"]["name"], night["name"]);
    // Attributes sent with the request are used instead of the stored ones.
    let other = explain(
        json!({"id": ada["principal_id"], "attributes": {"department": "sales"}}),
        "2026-12-02T14:00:00Z",
    )
    .await;
    assert_eq!(other.assert_status(200)["reason"], "no_rule_matched");
    assert_eq!(other.body["decided_by"], Value::Null);

    // What cannot be read.
    let many = vec!["s"; 101];
    for body in [
        json!({"agent": {"id": "reporter", "name": "r"}}),
        json!({"agent": {"id": agent, "name": "r"}, "now": "yesterday"}),
        json!({"agent": {"id": agent, "name": "r"}, "principal": {"id": "ada"}}),
        json!({"agent": {"id": agent, "name": "r"}, "scopes": many}),
    ] {
        app.post("/v1/access-rules/explain", &tenant.token, body)
            .await
            .assert_problem(400, "invalid_access_request");
    }
    app.post(
        "/v1/access-rules/explain",
        &tenant.token,
        json!({"agent": {"id": agent}}),
    )
    .await
    .assert_problem(404, "agent_not_found");
    app.post(
        "/v1/access-rules/explain",
        &tenant.token,
        json!({"agent": {"id": agent, "name": "r"}, "principal": {"id": uuid::Uuid::new_v4()}}),
    )
    .await
    .assert_problem(404, "principal_not_found");
    app.post(
        "/v1/access-rules/explain",
        &tenant.token,
        json!({"agent": {"id": agent, "name": "r"}, "colour": "red"}),
    )
    .await
    .assert_problem(400, "invalid_body");
}

#[tokio::test(flavor = "multi_thread")]
async fn another_accounts_admin_gets_404_on_every_route_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let mine = app.bootstrap().await;
    let theirs = app.bootstrap().await;
    let ada = principal(
        &app,
        &theirs,
        json!({"username": "ada", "attributes": {"a": 1}}),
    )
    .await;
    let deny = rule(&app, &theirs, json!({"name": "deny", "effect": "deny"})).await;
    let principal_path = format!("/v1/users/{}", ada["principal_id"].as_str().unwrap());
    let rule_path = format!("/v1/access-rules/{}", deny["rule_id"].as_str().unwrap());
    let their_audit = app.audit(&theirs).await;
    let my_audit = app.audit(&mine).await;

    app.get(&principal_path, &mine.token)
        .await
        .assert_problem(404, "principal_not_found");
    put(
        &app,
        &principal_path,
        &mine.token,
        json!({"username": "mallory"}),
    )
    .await
    .assert_problem(404, "principal_not_found");
    app.delete(&principal_path, &mine.token)
        .await
        .assert_problem(404, "principal_not_found");
    app.get(&rule_path, &mine.token)
        .await
        .assert_problem(404, "access_rule_not_found");
    put(
        &app,
        &rule_path,
        &mine.token,
        json!({"name": "mine", "effect": "allow"}),
    )
    .await
    .assert_problem(404, "access_rule_not_found");
    app.delete(&rule_path, &mine.token)
        .await
        .assert_problem(404, "access_rule_not_found");
    app.post(
        "/v1/access-rules/explain",
        &mine.token,
        json!({"agent": {"id": uuid::Uuid::new_v4(), "name": "r"},
               "principal": {"id": ada["principal_id"]}}),
    )
    .await
    .assert_problem(404, "principal_not_found");
    // Lists and decisions are the caller's account's only.
    assert_eq!(
        app.get("/v1/users", &mine.token).await.assert_status(200),
        &json!([])
    );
    assert_eq!(
        app.get("/v1/access-rules", &mine.token)
            .await
            .assert_status(200),
        &json!([])
    );
    let decision = app
        .post(
            "/v1/access-rules/explain",
            &mine.token,
            json!({"agent": {"id": uuid::Uuid::new_v4(), "name": "r"}, "scopes": ["a"]}),
        )
        .await;
    assert_eq!(decision.assert_status(200)["reason"], "no_rule_matched");
    // Their usernames and rule names are theirs: taking them here is no clash.
    principal(&app, &mine, json!({"username": "ada"})).await;
    rule(&app, &mine, json!({"name": "deny", "effect": "allow"})).await;

    assert_eq!(
        app.audit(&theirs).await,
        their_audit,
        "nothing written there"
    );
    assert_eq!(
        app.audit(&mine).await.len(),
        my_audit.len() + 2,
        "only the two creations here"
    );
    let read = app.get(&principal_path, &theirs.token).await;
    assert_eq!(read.assert_status(200)["username"], "ada");
    let read = app.get(&rule_path, &theirs.token).await;
    assert_eq!(read.assert_status(200)["name"], "deny");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rule_change_through_one_replica_decides_on_another_within_a_second() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let replica = app.replica(&[]).await;
    let request = json!({"agent": {"id": uuid::Uuid::new_v4(), "name": "reporter"},
                         "scopes": ["reports.read"], "now": "2026-12-02T14:00:00Z"});
    let explain_on_replica = || async {
        replica
            .post("/v1/access-rules/explain", &tenant.token, request.clone())
            .await
            .assert_status(200)
            .clone()
    };
    // The replica compiles and caches the account's (empty) rules.
    for _ in 0..3 {
        assert_eq!(explain_on_replica().await["reason"], "no_rule_matched");
    }
    let deny = rule(&app, &tenant, json!({"name": "stop", "effect": "deny"})).await;
    let created = Instant::now();
    let mut reason = Value::Null;
    while created.elapsed() < Duration::from_secs(1) {
        reason = explain_on_replica().await["reason"].clone();
        if reason == "denied" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        reason, "denied",
        "the replica still decided without the new rule a second later"
    );

    // A replacement too: the rule turned off stops denying there.
    put(
        &app,
        &format!("/v1/access-rules/{}", deny["rule_id"].as_str().unwrap()),
        &tenant.token,
        json!({"name": "stop", "effect": "deny", "enabled": false}),
    )
    .await
    .assert_status(200);
    let changed = Instant::now();
    while changed.elapsed() < Duration::from_secs(1) {
        reason = explain_on_replica().await["reason"].clone();
        if reason == "no_rule_matched" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        reason, "no_rule_matched",
        "the replica still decided with the disabled rule a second later"
    );
}
