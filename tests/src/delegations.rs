//! Delegation grants through the real server: made only within what the grantor holds and
//! the agent may have, listed by grantor and agent, revoked once, expiring; bad input and
//! another account's admin refused with nothing written.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Tenant, TestApp};
use crate::oauth::{Client, agent};

pub(crate) const API: &str = "https://api.example.com/";

pub(crate) async fn principal(app: &TestApp, tenant: &Tenant, username: &str) -> String {
    let reply = app
        .post("/v1/users", &tenant.token, json!({ "username": username }))
        .await;
    reply.assert_status(201)["principal_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A tool named `name` requiring `tools:read`, bound to each of `agents`.
/// A principal with an email address: its id.
pub(crate) async fn principal_with_email(
    app: &TestApp,
    tenant: &Tenant,
    username: &str,
    email: &str,
) -> String {
    let body = json!({ "username": username, "email": email });
    let reply = app.post("/v1/users", &tenant.token, body).await;
    reply.assert_status(201)["principal_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

pub(crate) async fn tool(app: &TestApp, tenant: &Tenant, name: &str, agents: &[&Client]) {
    let reply = app
        .post(
            "/v1/tools",
            &tenant.token,
            json!({"name": name, "parameters": {"type": "object"}, "required_scopes": ["tools:read"]}),
        )
        .await;
    let id = reply.assert_status(201)["tool_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for agent in agents {
        let path = format!("/v1/agents/{}/tools/{id}", agent.id);
        app.send(app.request(Method::POST, &path, Some(&tenant.token)))
            .await
            .assert_status(201);
    }
}

pub(crate) async fn agent_with(
    app: &TestApp,
    tenant: &Tenant,
    name: &str,
    scopes: Value,
) -> Client {
    agent(
        app,
        tenant,
        json!({"name": name, "scopes": scopes, "resources": [API]}),
    )
    .await
}

pub(crate) fn by(kind: &str, id: &str) -> Value {
    json!({"type": kind, "id": id})
}

pub(crate) async fn audited(app: &TestApp, tenant: &Tenant, action: &str) -> usize {
    app.audit(tenant)
        .await
        .iter()
        .filter(|record| record["action"] == action)
        .count()
}

fn ids(reply: &Value) -> Vec<String> {
    reply
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["delegation_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn grants_narrow_what_their_grantor_holds_and_are_listed_revoked_and_expire() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let ada = principal(&app, &tenant, "ada").await;
    // `tools:execute` implies `tools:read` in the default catalog.
    let planner = agent_with(
        &app,
        &tenant,
        "planner",
        json!(["tools:execute", "reports.read"]),
    )
    .await;
    let writer = agent_with(
        &app,
        &tenant,
        "writer",
        json!(["tools:read", "reports.read"]),
    )
    .await;
    tool(&app, &tenant, "search.web", &[&planner, &writer]).await;
    tool(&app, &tenant, "mail.send", &[&writer]).await;

    // A principal holds any scope and every active tool; the agent bounds the grant.
    let from_ada = app
        .post(
            "/v1/delegations",
            &tenant.token,
            json!({"grantor": by("principal", &ada), "agent_id": planner.id,
                   "scopes": ["reports.read", "tools:execute"], "tools": ["search.web"],
                   "resources": [API], "task_id": "task-7", "max_depth": 2, "expires_in": 3600}),
        )
        .await;
    let from_ada = from_ada.assert_status(201).clone();
    assert_eq!(from_ada["status"], "active");
    assert_eq!(from_ada["grantor"], by("principal", &ada));
    assert_eq!(from_ada["scopes"], json!(["reports.read", "tools:execute"]));
    assert_eq!(from_ada["max_depth"], 2);
    assert_eq!(from_ada["revoked_at"], Value::Null);
    assert!(
        from_ada["created_by"]
            .as_str()
            .unwrap()
            .starts_with("token:")
    );
    let from_ada_id = from_ada["delegation_id"].as_str().unwrap().to_owned();

    // An agent delegates part of what it may have: `tools:read` through `tools:execute`.
    app.advance(1);
    let from_planner = app
        .post(
            "/v1/delegations",
            &tenant.token,
            json!({"grantor": by("agent", &planner.id), "agent_id": writer.id,
                   "scopes": ["tools:read"], "tools": ["search.web"]}),
        )
        .await;
    let from_planner = from_planner.assert_status(201).clone();
    assert_eq!(from_planner["max_depth"], 1, "the default depth");
    assert_eq!(from_planner["tools"], json!(["search.web"]));
    assert_eq!(from_planner["resources"], json!([]));
    let from_planner_id = from_planner["delegation_id"].as_str().unwrap().to_owned();

    // Nothing wider than the grantor holds, or than the agent may have.
    for (body, says) in [
        (
            json!({"grantor": by("agent", &planner.id), "agent_id": writer.id, "scopes": ["admin"]}),
            "the grantor may not have the scope `admin`",
        ),
        (
            json!({"grantor": by("agent", &planner.id), "agent_id": writer.id,
                   "scopes": ["tools:read"], "tools": ["mail.send"]}),
            "the grantor has no active tool `mail.send`",
        ),
        (
            json!({"grantor": by("agent", &planner.id), "agent_id": writer.id,
                   "scopes": ["tools:read"], "resources": ["https://other.example/"]}),
            "the grantor may not target `https://other.example/`",
        ),
        (
            json!({"grantor": by("principal", &ada), "agent_id": writer.id, "scopes": ["tools:execute"]}),
            "the agent may not have the scope `tools:execute`",
        ),
        (
            json!({"grantor": by("principal", &ada), "agent_id": planner.id,
                   "scopes": ["tools:read"], "tools": ["mail.send"]}),
            "the agent has no active tool `mail.send`",
        ),
        (
            json!({"grantor": by("principal", &ada), "agent_id": planner.id,
                   "scopes": ["tools:read"], "tools": ["no.such.tool"]}),
            "the grantor has no active tool `no.such.tool`",
        ),
    ] {
        let reply = app.post("/v1/delegations", &tenant.token, body).await;
        reply.assert_problem(400, "delegation_exceeds_grantor");
        assert!(
            reply.body["detail"].as_str().unwrap().contains(says),
            "{}",
            reply.body
        );
    }
    // An inactive principal has nothing to delegate.
    let grace = principal(&app, &tenant, "grace").await;
    app.send(
        app.request(
            Method::PUT,
            &format!("/v1/users/{grace}"),
            Some(&tenant.token),
        )
        .json(&json!({"username": "grace", "active": false})),
    )
    .await
    .assert_status(200);
    app.post(
        "/v1/delegations",
        &tenant.token,
        json!({"grantor": by("principal", &grace), "agent_id": planner.id, "scopes": ["reports.read"]}),
    )
    .await
    .assert_problem(400, "delegation_exceeds_grantor");

    // Listed newest first, by grantor, by agent, by whether they work.
    let list = |query: &str| {
        let path = format!("/v1/delegations{query}");
        let app = &app;
        let token = tenant.token.clone();
        async move { app.get(&path, &token).await.assert_status(200).clone() }
    };
    assert_eq!(
        ids(&list("").await),
        [from_planner_id.as_str(), from_ada_id.as_str()]
    );
    assert_eq!(
        ids(&list(&format!("?principal_id={ada}")).await),
        [from_ada_id.as_str()]
    );
    assert_eq!(
        ids(&list(&format!("?grantor_agent_id={}", planner.id)).await),
        [from_planner_id.as_str()]
    );
    assert_eq!(
        ids(&list(&format!("?agent_id={}", planner.id)).await),
        [from_ada_id.as_str()]
    );
    let first = app.get("/v1/delegations?limit=1", &tenant.token).await;
    assert_eq!(ids(first.assert_status(200)), [from_planner_id.as_str()]);
    let cursor = first.header("x-next-cursor").unwrap().to_owned();
    assert_eq!(
        ids(&list(&format!("?limit=1&cursor={cursor}")).await),
        [from_ada_id.as_str()]
    );
    app.get(
        &format!(
            "/v1/delegations?principal_id={ada}&grantor_agent_id={}",
            planner.id
        ),
        &tenant.token,
    )
    .await
    .assert_problem(400, "invalid_query");

    // Revoked once: the second revocation answers the first.
    let path = format!("/v1/delegations/{from_planner_id}");
    let revoked = app.delete(&path, &tenant.token).await;
    let revoked = revoked.assert_status(200).clone();
    assert_eq!(revoked["status"], "revoked");
    assert_eq!(revoked["revoked_reason"], "admin");
    assert!(
        revoked["revoked_by"]
            .as_str()
            .unwrap()
            .starts_with("token:")
    );
    app.advance(5);
    let again = app.delete(&path, &tenant.token).await;
    assert_eq!(
        again.assert_status(200)["revoked_at"],
        revoked["revoked_at"]
    );
    assert_eq!(
        app.get(&path, &tenant.token).await.assert_status(200),
        &revoked
    );
    assert_eq!(ids(&list("?active=true").await), [from_ada_id.as_str()]);

    // Expired after its hour.
    app.advance(3_600);
    let expired = app
        .get(&format!("/v1/delegations/{from_ada_id}"), &tenant.token)
        .await;
    assert_eq!(expired.assert_status(200)["status"], "expired");
    assert!(ids(&list("?active=true").await).is_empty());

    assert_eq!(audited(&app, &tenant, "delegation.create").await, 2);
    assert_eq!(audited(&app, &tenant, "delegation.revoke").await, 1);
    let audit = app.audit(&tenant).await;
    let made = audit
        .iter()
        .find(|r| r["action"] == "delegation.create" && r["resource_id"] == from_ada_id.as_str())
        .expect("the grant's record");
    assert_eq!(made["metadata"]["grantor"], by("principal", &ada));
    assert_eq!(made["metadata"]["agent_id"], planner.id.as_str());
    assert_eq!(
        made["metadata"]["scopes"],
        json!(["reports.read", "tools:execute"])
    );
    assert_eq!(made["metadata"]["max_depth"], 2);
    let revoke = audit
        .iter()
        .find(|r| r["action"] == "delegation.revoke")
        .unwrap();
    assert_eq!(revoke["resource_id"], from_planner_id.as_str());
    assert_eq!(revoke["metadata"]["reason"], "admin");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_grants_and_another_accounts_admin_are_refused_with_nothing_written() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let other = app.bootstrap().await;
    let ada = principal(&app, &tenant, "ada").await;
    let planner = agent_with(&app, &tenant, "planner", json!(["reports.read"])).await;
    let good = json!({"grantor": by("principal", &ada), "agent_id": planner.id, "scopes": ["reports.read"]});
    let with = |field: &str, value: Value| {
        let mut body = good.clone();
        body[field] = value;
        body
    };
    let audit_before = app.audit(&tenant).await.len();
    for (body, status, code) in [
        (with("scopes", json!([])), 400, "invalid_delegation"),
        (
            with("scopes", json!(["two words"])),
            400,
            "invalid_delegation",
        ),
        (with("max_depth", json!(0)), 400, "invalid_delegation"),
        (with("max_depth", json!(11)), 400, "invalid_delegation"),
        (with("max_depth", json!(-1)), 400, "invalid_body"),
        (with("expires_in", json!(59)), 400, "invalid_delegation"),
        (
            with("expires_in", json!(31_536_001)),
            400,
            "invalid_delegation",
        ),
        (
            with("task_id", json!("no spaces allowed")),
            400,
            "invalid_delegation",
        ),
        (
            with("resources", json!(["not a uri"])),
            400,
            "invalid_delegation",
        ),
        (
            with("tools", json!(["bad tool!"])),
            400,
            "invalid_delegation",
        ),
        (
            with("grantor", json!({"type": "robot", "id": ada})),
            400,
            "invalid_body",
        ),
        (
            with("grantor", by("agent", &planner.id)),
            400,
            "invalid_delegation",
        ),
        (with("agent_id", json!("not-a-uuid")), 400, "invalid_body"),
        (with("owner", json!("me")), 400, "invalid_body"),
        (
            json!({"grantor": by("principal", &ada), "agent_id": planner.id}),
            400,
            "invalid_body",
        ),
        (
            with(
                "grantor",
                by("principal", &uuid::Uuid::new_v4().to_string()),
            ),
            404,
            "principal_not_found",
        ),
        (
            with("agent_id", json!(uuid::Uuid::new_v4())),
            404,
            "agent_not_found",
        ),
    ] {
        app.post("/v1/delegations", &tenant.token, body.clone())
            .await
            .assert_problem(status, code);
    }
    app.get("/v1/delegations/not-a-uuid", &tenant.token)
        .await
        .assert_problem(400, "invalid_path");
    app.get("/v1/delegations?active=maybe", &tenant.token)
        .await
        .assert_problem(400, "invalid_query");
    assert_eq!(app.audit(&tenant).await.len(), audit_before);

    // Another account's admin reaches none of it, and cannot name this account's parties.
    let reply = app
        .post("/v1/delegations", &tenant.token, good.clone())
        .await;
    let id = reply.assert_status(201)["delegation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/delegations/{id}");
    app.get(&path, &other.token)
        .await
        .assert_problem(404, "delegation_not_found");
    app.delete(&path, &other.token)
        .await
        .assert_problem(404, "delegation_not_found");
    assert!(
        ids(app
            .get("/v1/delegations", &other.token)
            .await
            .assert_status(200))
        .is_empty()
    );
    let outsider = agent_with(&app, &other, "outsider", json!(["reports.read"])).await;
    app.post("/v1/delegations", &other.token, good.clone())
        .await
        .assert_problem(404, "principal_not_found");
    app.post(
        "/v1/delegations",
        &other.token,
        json!({"grantor": by("agent", &outsider.id), "agent_id": planner.id, "scopes": ["reports.read"]}),
    )
    .await
    .assert_problem(404, "agent_not_found");
    assert_eq!(audited(&app, &other, "delegation.create").await, 0);
    assert_eq!(
        app.get(&path, &tenant.token).await.assert_status(200)["status"],
        "active"
    );
}
