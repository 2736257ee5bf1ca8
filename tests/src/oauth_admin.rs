//! The admins' view of an account's authorization server, through the real server: the
//! dashboard's counts, the token list and its filters, a token with its lineage,
//! revocation with descendants (audited), introspection by text, a task with its chain;
//! malformed queries refused, another account's tokens never seen.

use serde_json::{Value, json};

use crate::harness::{Reply, Tenant, TestApp};
use crate::oauth::{Client, agent, form};

fn filer() -> Value {
    json!({"name": "Filer", "scopes": ["reports.export", "tools:read"]})
}

async fn grant(app: &TestApp, tenant: &Tenant, client: &Client, fields: &[(&str, &str)]) -> Value {
    let mut all = vec![("grant_type", "client_credentials")];
    all.extend_from_slice(fields);
    form(app, tenant, "token", Some(client), &all)
        .await
        .assert_status(200)
        .clone()
}

fn ids(reply: &Reply) -> Vec<String> {
    reply
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["token_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn admins_see_count_inspect_and_revoke_their_accounts_tokens() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let other = app.bootstrap().await;
    let client = agent(&app, &tenant, filer()).await;
    let stranger = agent(&app, &other, filer()).await;

    let root = grant(&app, &tenant, &client, &[("task_id", "task-root")]).await;
    let child = grant(
        &app,
        &tenant,
        &client,
        &[("task_id", "task-child"), ("parent_task_id", "task-root")],
    )
    .await;
    let refreshed = form(
        &app,
        &tenant,
        "token",
        Some(&client),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", child["refresh_token"].as_str().unwrap()),
        ],
    )
    .await
    .assert_status(200)
    .clone();
    grant(&app, &other, &stranger, &[("task_id", "task-child")]).await;
    // A denial: a scope the agent may not have.
    let denied = form(
        &app,
        &tenant,
        "token",
        Some(&client),
        &[("grant_type", "client_credentials"), ("scope", "admin:all")],
    )
    .await;
    assert_eq!(denied.status.as_u16(), 400, "{}", denied.text);

    // The dashboard.
    let dashboard = app.get("/v1/admin/dashboard", &tenant.token).await;
    let body = dashboard.assert_status(200);
    assert_eq!(
        body["agents"],
        json!({"pending": 0, "active": 1, "disabled": 0})
    );
    // Three access tokens: two grants and a refresh.
    assert_eq!(body["active_access_tokens"], 3);
    let windows = body["windows"].as_array().unwrap();
    assert_eq!(windows.len(), 3);
    assert_eq!(
        windows[0],
        json!({"window": "1h", "issued": 3, "denied": 1})
    );

    // The list and its filters.
    let all = app.get("/v1/admin/tokens", &tenant.token).await;
    assert_eq!(ids(&all).len(), 6, "{}", all.text);
    assert!(all.text.contains(&client.id));
    assert!(!all.text.contains(&stranger.id), "another account's tokens");
    let access = app
        .get(
            "/v1/admin/tokens?token_type=access_token&task_id=task-child",
            &tenant.token,
        )
        .await;
    assert_eq!(ids(&access).len(), 2);
    let by_agent = app
        .get(
            &format!(
                "/v1/admin/tokens?client_id={}&active=true&limit=2",
                client.id
            ),
            &tenant.token,
        )
        .await;
    assert_eq!(ids(&by_agent).len(), 2);
    assert!(by_agent.header("x-next-cursor").is_some());
    for bad in [
        "/v1/admin/tokens?token_type=id_token",
        "/v1/admin/tokens?task_id=a%20b",
        "/v1/admin/tokens?limit=0",
        "/v1/admin/tokens?colour=blue",
        "/v1/admin/tasks/a%20b",
        &format!("/v1/audit?task_id={}", "t".repeat(129)),
    ] {
        let reply = app.get(bad, &tenant.token).await;
        assert_eq!(reply.status.as_u16(), 400, "{bad}: {}", reply.text);
    }

    // A token with its lineage: the refreshed access token descends from the spent
    // refresh token.
    let refreshed_id = refreshed["token_id"].as_str().unwrap();
    let shown = app
        .get(&format!("/v1/admin/tokens/{refreshed_id}"), &tenant.token)
        .await;
    let body = shown.assert_status(200);
    assert_eq!(body["valid"], true, "{}", shown.text);
    assert_eq!(body["token"]["active"], true);
    assert_eq!(body["token"]["task_id"], "task-child");
    assert_eq!(body["lineage"].as_array().unwrap().len(), 1);
    assert_eq!(body["lineage"][0]["token_type"], "refresh_token");
    for (who, id) in [
        (&other, refreshed_id.to_owned()),
        (&tenant, uuid::Uuid::new_v4().to_string()),
    ] {
        app.get(&format!("/v1/admin/tokens/{id}"), &who.token)
            .await
            .assert_problem(404, "oauth_token_not_found");
        app.post(
            &format!("/v1/admin/tokens/{id}/revoke"),
            &who.token,
            json!({}),
        )
        .await
        .assert_problem(404, "oauth_token_not_found");
    }

    // Introspection by text.
    let live = refreshed["access_token"].as_str().unwrap();
    let introspected = app
        .post(
            "/v1/admin/introspect",
            &tenant.token,
            json!({"token": live}),
        )
        .await;
    assert_eq!(introspected.assert_status(200)["active"], true);
    assert_eq!(introspected.body["client_id"], client.id.as_str());
    let foreign = app
        .post("/v1/admin/introspect", &other.token, json!({"token": live}))
        .await;
    assert_eq!(foreign.assert_status(200), &json!({"active": false}));
    for bad in [
        json!({"tok": live}),
        json!({"token": ""}),
        json!({"token": "x".repeat(16_385)}),
    ] {
        app.post("/v1/admin/introspect", &tenant.token, bad)
            .await
            .assert_status(400);
    }

    // The task and its chain.
    let task = app.get("/v1/admin/tasks/task-child", &tenant.token).await;
    let body = task.assert_status(200);
    assert_eq!(body["tokens"].as_array().unwrap().len(), 4, "{}", task.text);
    assert_eq!(
        body["chain"],
        json!([{"task_id": "task-root", "parent_task_id": null, "known": true}])
    );
    let actions: Vec<&str> = body["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["oauth.token_refresh", "oauth.token_issue"],
        "{}",
        task.text
    );
    let trail = app.get("/v1/audit?task_id=task-child", &tenant.token).await;
    assert_eq!(trail.assert_status(200).as_array().unwrap().len(), 2);
    let theirs = app.get("/v1/admin/tasks/task-child", &other.token).await;
    assert_eq!(
        theirs.assert_status(200)["tokens"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        theirs.body["audit"].as_array().unwrap().len(),
        1,
        "their own issuance only"
    );

    // Revoking the rotated refresh token's parent (the spent one) reaches what it issued.
    let spent = shown.body["lineage"][0]["jti"].as_str().unwrap().to_owned();
    let revoked = app
        .post(
            &format!("/v1/admin/tokens/{spent}/revoke"),
            &tenant.token,
            json!({}),
        )
        .await;
    let revoked_ids: Vec<&str> = revoked.assert_status(200)["revoked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap())
        .collect();
    assert!(revoked_ids.contains(&refreshed_id), "{}", revoked.text);
    let after = app
        .post(
            "/v1/admin/introspect",
            &tenant.token,
            json!({"token": live}),
        )
        .await;
    assert_eq!(after.assert_status(200), &json!({"active": false}));
    let root_access = root["access_token"].as_str().unwrap();
    let untouched = app
        .post(
            "/v1/admin/introspect",
            &tenant.token,
            json!({"token": root_access}),
        )
        .await;
    assert_eq!(
        untouched.assert_status(200)["active"],
        true,
        "another grant stays"
    );
    let audit = app.audit(&tenant).await;
    let record = audit
        .iter()
        .find(|r| r["action"] == "oauth.token_revoke")
        .expect("the revocation is audited");
    assert_eq!(record["metadata"]["reason"], "admin");
    assert!(
        record["metadata"]["by"]
            .as_str()
            .unwrap()
            .starts_with("token:")
    );
}
