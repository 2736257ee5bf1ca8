//! No route lets one account read or change another's data.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::TestApp;

#[tokio::test(flavor = "multi_thread")]
async fn every_account_route_refuses_another_accounts_caller_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let mine = app.bootstrap().await;
    let theirs = app.bootstrap().await;
    let (their_dev, their_dev_id) = app.issue(&theirs, json!({ "kind": "dev" })).await;
    let their_tokens_before = app
        .get(
            &format!("/v1/accounts/{}/tokens", theirs.account_id),
            &theirs.token,
        )
        .await
        .text;
    let their_audit_before = app.audit(&theirs).await;

    let account = &theirs.account_id;
    let their_user = &theirs.user_id;
    let routes: Vec<(Method, String, Value)> = vec![
        (
            Method::GET,
            format!("/v1/accounts/{account}/tokens"),
            Value::Null,
        ),
        (
            Method::POST,
            format!("/v1/accounts/{account}/tokens"),
            json!({ "kind": "admin" }),
        ),
        (
            Method::POST,
            format!("/v1/accounts/{account}/tokens/server"),
            json!({ "app_name": "x" }),
        ),
        (
            Method::GET,
            format!("/v1/accounts/{account}/tokens/{their_dev_id}"),
            Value::Null,
        ),
        (
            Method::PATCH,
            format!("/v1/accounts/{account}/tokens/{their_dev_id}"),
            json!({ "token_name": "pwned", "expires_at": null }),
        ),
        (
            Method::DELETE,
            format!("/v1/accounts/{account}/tokens/{their_dev_id}"),
            Value::Null,
        ),
        (
            Method::POST,
            format!("/v1/accounts/{account}/tokens/{their_dev_id}/rotate"),
            Value::Null,
        ),
        (
            Method::GET,
            format!("/v1/accounts/{account}/members"),
            Value::Null,
        ),
        (
            Method::PATCH,
            format!("/v1/accounts/{account}/members/{their_user}"),
            json!({ "role": "member" }),
        ),
        (
            Method::DELETE,
            format!("/v1/accounts/{account}/members/{their_user}"),
            Value::Null,
        ),
        (
            Method::GET,
            format!("/v1/accounts/{account}/scopes"),
            Value::Null,
        ),
        (
            Method::PATCH,
            format!("/v1/accounts/{account}/name"),
            json!({ "name": "Pwned" }),
        ),
    ];
    for (method, path, body) in routes {
        let mut request = app.request(method.clone(), &path, Some(&mine.token));
        if !body.is_null() {
            request = request.json(&body);
        }
        let reply = app.send(request).await;
        reply.assert_problem(403, "account_mismatch");
        assert!(
            !reply.text.contains(&their_dev_id),
            "{method} {path} leaked data"
        );
    }

    // Naming their token under my own account finds nothing.
    let mine_path = format!("/v1/accounts/{}/tokens/{their_dev_id}", mine.account_id);
    app.delete(&mine_path, &mine.token)
        .await
        .assert_problem(404, "token_not_found");
    app.post(&format!("{mine_path}/rotate"), &mine.token, Value::Null)
        .await
        .assert_problem(404, "token_not_found");
    app.get(&mine_path, &mine.token)
        .await
        .assert_problem(404, "token_not_found");
    app.patch(&mine_path, &mine.token, json!({ "token_name": "pwned" }))
        .await
        .assert_problem(404, "token_not_found");

    // Their side is exactly as before.
    app.get("/v1/accounts/me", &their_dev)
        .await
        .assert_status(200);
    let their_tokens_after = app
        .get(
            &format!("/v1/accounts/{}/tokens", theirs.account_id),
            &theirs.token,
        )
        .await
        .text;
    assert_eq!(their_tokens_after, their_tokens_before);
    assert_eq!(app.audit(&theirs).await, their_audit_before);
    let me = app.get("/v1/accounts/me", &theirs.token).await;
    assert_eq!(me.body["account_id"], theirs.account_id.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn account_wide_routes_only_ever_show_the_callers_account() {
    let app = TestApp::spawn().await;
    let mine = app.bootstrap().await;
    let theirs = app.bootstrap().await;
    app.issue(&theirs, json!({})).await;
    app.patch(
        "/v1/accounts/me",
        &theirs.token,
        json!({ "metrics_enabled": false }),
    )
    .await
    .assert_status(200);

    let trail = app.audit(&mine).await;
    assert_eq!(trail.len(), 1);
    assert!(
        trail
            .iter()
            .all(|r| r["resource_id"] != theirs.account_id.as_str())
    );
    let me = app.get("/v1/accounts/me", &mine.token).await;
    assert_eq!(me.body["account_id"], mine.account_id.as_str());
    assert_eq!(me.body["metrics_enabled"], true);
    let listed = app
        .get(
            &format!("/v1/accounts/{}/tokens", mine.account_id),
            &mine.token,
        )
        .await;
    assert_eq!(listed.body.as_array().unwrap().len(), 1);
}
