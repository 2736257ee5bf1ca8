use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Tenant, TestApp};

async fn me_status(app: &TestApp, token: &str) -> u16 {
    app.get("/v1/accounts/me", token).await.status.as_u16()
}

fn tokens_path(tenant: &Tenant) -> String {
    format!("/v1/accounts/{}/tokens", tenant.account_id)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_kind_can_be_created_listed_revoked_and_rotated() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let server_path = format!("{}/server", tokens_path(&tenant));

    let dev = app
        .post(
            &tokens_path(&tenant),
            &tenant.token,
            json!({ "kind": "dev", "token_name": "ci" }),
        )
        .await;
    let server = app
        .post(
            &server_path,
            &tenant.token,
            json!({ "app_name": " billing agent " }),
        )
        .await;
    let admin = app
        .post(
            &tokens_path(&tenant),
            &tenant.token,
            json!({ "scopes": ["admin"] }),
        )
        .await;
    let custom = app
        .post(
            &tokens_path(&tenant),
            &tenant.token,
            json!({ "scopes": ["metrics.read"] }),
        )
        .await;
    let expectations = [
        (&dev, "dev", json!(["dev"])),
        (&server, "server", json!(["server"])),
        (
            &admin,
            "admin",
            json!([
                "policy.read",
                "policy.publish",
                "policy.revoke",
                "policy.revert",
                "key.upload",
                "event.ingest",
                "metrics.read",
                "usage.report",
                "members.read",
                "admin"
            ]),
        ),
        (&custom, "custom", json!(["metrics.read"])),
    ];
    for (reply, kind, scopes) in &expectations {
        let body = reply.assert_status(201);
        assert_eq!(body["kind"], *kind);
        assert_eq!(body["scopes"], *scopes);
        assert_eq!(reply.header("cache-control"), Some("no-store"));
        let secret = body["token"].as_str().unwrap();
        assert!(secret.starts_with("d2_") && secret.len() == 52);
        assert_eq!(me_status(&app, secret).await, 200);
    }
    assert_eq!(server.body["app_name"], "billing_agent");
    assert_eq!(dev.body["token_name"], "ci");

    // The list shows every token, never a secret.
    let list = app.get(&tokens_path(&tenant), &tenant.token).await;
    let items = list.assert_status(200).as_array().unwrap().clone();
    assert_eq!(items.len(), 5, "four plus the bootstrap token");
    for (reply, _, _) in &expectations {
        assert!(!list.text.contains(reply.body["token"].as_str().unwrap()));
    }
    assert!(!list.text.contains(&tenant.token));

    // Revoke each: 202, then the token stops working; a second revoke is accepted.
    for (reply, _, _) in &expectations {
        let id = reply.body["token_id"].as_str().unwrap();
        let path = format!("{}/{id}", tokens_path(&tenant));
        assert_eq!(
            app.delete(&path, &tenant.token).await.assert_status(202)["message"],
            "token_revoked"
        );
        let refused = app
            .get("/v1/accounts/me", reply.body["token"].as_str().unwrap())
            .await;
        refused.assert_problem(401, "token_revoked");
        assert_eq!(
            refused.header("www-authenticate"),
            Some("Bearer realm=\"d2\", error=\"invalid_token\"")
        );
        assert_eq!(
            app.delete(&path, &tenant.token).await.assert_status(202)["message"],
            "token_already_revoked"
        );
    }
    let revoked = app.get(&tokens_path(&tenant), &tenant.token).await;
    let revoked_count = revoked
        .body
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| !t["revoked_at"].is_null())
        .count();
    assert_eq!(revoked_count, 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn rotation_keeps_the_old_token_for_the_grace_period_then_not() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    for kind in ["dev", "server", "admin"] {
        let (old, id) = app
            .issue(&tenant, json!({ "kind": kind, "token_name": kind }))
            .await;
        let path = format!("{}/{id}/rotate", tokens_path(&tenant));
        let rotated = app.post(&path, &tenant.token, Value::Null).await;
        let body = rotated.assert_status(201).clone();
        assert_eq!(body["kind"], kind);
        assert_eq!(body["token_name"], kind);
        assert_eq!(body["previous_token_id"], id.as_str());
        let grace_end: chrono::DateTime<chrono::Utc> = body["previous_token_expires_at"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let new = body["token"].as_str().unwrap().to_owned();
        assert_ne!(new, old);

        app.advance(599);
        assert!(app.clock_is_before(grace_end));
        assert_eq!(
            me_status(&app, &old).await,
            200,
            "{kind}: inside the grace period"
        );
        app.advance(2);
        app.get("/v1/accounts/me", &old)
            .await
            .assert_problem(401, "token_expired");
        assert_eq!(me_status(&app, &new).await, 200);

        // Rotating again is refused: the token has expired, and it was rotated already.
        let again = app.post(&path, &tenant.token, Value::Null).await;
        again.assert_problem(410, "token_already_expired");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rotated_and_revoked_tokens_cannot_be_rotated() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let (_, id) = app.issue(&tenant, json!({})).await;
    let path = format!("{}/{id}/rotate", tokens_path(&tenant));
    app.post(&path, &tenant.token, Value::Null)
        .await
        .assert_status(201);
    app.post(&path, &tenant.token, Value::Null)
        .await
        .assert_problem(409, "token_already_rotated");

    let (_, revoked) = app.issue(&tenant, json!({})).await;
    app.delete(
        &format!("{}/{revoked}", tokens_path(&tenant)),
        &tenant.token,
    )
    .await
    .assert_status(202);
    let path = format!("{}/{revoked}/rotate", tokens_path(&tenant));
    app.post(&path, &tenant.token, Value::Null)
        .await
        .assert_problem(410, "token_already_revoked");
    let unknown = format!("{}/{}/rotate", tokens_path(&tenant), uuid::Uuid::new_v4());
    app.post(&unknown, &tenant.token, Value::Null)
        .await
        .assert_problem(404, "token_not_found");
}

#[tokio::test(flavor = "multi_thread")]
async fn defaults_and_request_rules() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    // No body, or a body without scopes, gives a dev token.
    let reply = app
        .send(app.request(Method::POST, &tokens_path(&tenant), Some(&tenant.token)))
        .await;
    assert_eq!(reply.assert_status(201)["kind"], "dev");
    let reply = app
        .post(
            &tokens_path(&tenant),
            &tenant.token,
            json!({ "token_name": "x" }),
        )
        .await;
    assert_eq!(reply.assert_status(201)["scopes"], json!(["dev"]));

    let past = (chrono::Utc::now() - chrono::Duration::days(1)).to_rfc3339();
    let cases = [
        (json!({ "scopes": [] }), "invalid_token_request"),
        (
            json!({ "scopes": ["policy.read", "bogus"] }),
            "invalid_token_request",
        ),
        (
            json!({ "scopes": ["dev", "metrics.read"] }),
            "invalid_token_request",
        ),
        (
            json!({ "kind": "dev", "scopes": ["dev"] }),
            "invalid_token_request",
        ),
        (
            json!({ "kind": "dev", "app_name": "x" }),
            "invalid_token_request",
        ),
        (
            json!({ "token_name": "n".repeat(101) }),
            "invalid_token_request",
        ),
        (json!({ "expires_at": past }), "invalid_expiry"),
    ];
    for (body, code) in cases {
        app.post(&tokens_path(&tenant), &tenant.token, body)
            .await
            .assert_problem(400, code);
    }
    app.post(
        &tokens_path(&tenant),
        &tenant.token,
        json!({ "kind": "root" }),
    )
    .await
    .assert_problem(400, "invalid_body");
    app.post(
        &tokens_path(&tenant),
        &tenant.token,
        json!({ "expires_at": "tomorrow" }),
    )
    .await
    .assert_problem(400, "invalid_body");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expiring_token_works_until_its_expiry() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let expires = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let (token, _) = app.issue(&tenant, json!({ "expires_at": expires })).await;
    assert_eq!(me_status(&app, &token).await, 200);
    app.advance(3601);
    app.get("/v1/accounts/me", &token)
        .await
        .assert_problem(401, "token_expired");
}

#[tokio::test(flavor = "multi_thread")]
async fn scopes_are_enforced_and_strict_ones_need_an_explicit_grant() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let (dev, dev_id) = app.issue(&tenant, json!({ "kind": "dev" })).await;
    let (dashboard, _) = app
        .issue(&tenant, json!({ "scopes": ["metrics.read"] }))
        .await;
    for token in [&dev, &dashboard] {
        app.post(&tokens_path(&tenant), token, json!({}))
            .await
            .assert_problem(403, "insufficient_scope");
        app.get(&tokens_path(&tenant), token)
            .await
            .assert_problem(403, "insufficient_scope");
        app.get("/v1/audit", token)
            .await
            .assert_problem(403, "insufficient_scope");
    }
    let path = format!("{}/{dev_id}", tokens_path(&tenant));
    app.delete(&path, &dev)
        .await
        .assert_problem(403, "insufficient_scope");
    assert_eq!(
        me_status(&app, &dev).await,
        200,
        "a refused call changes nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn lists_page_with_opaque_cursors() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    for _ in 0..5 {
        app.advance(1);
        app.issue(&tenant, json!({})).await;
    }
    let mut seen = Vec::new();
    let mut path = format!("{}?limit=2", tokens_path(&tenant));
    loop {
        let reply = app.get(&path, &tenant.token).await;
        seen.extend(
            reply
                .assert_status(200)
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["token_id"].clone()),
        );
        match reply.header("x-next-cursor") {
            Some(cursor) => {
                assert!(
                    cursor
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                );
                path = format!("{}?limit=2&cursor={cursor}", tokens_path(&tenant));
            }
            None => break,
        }
    }
    assert_eq!(seen.len(), 6);
    let mut unique = seen.clone();
    unique.dedup();
    assert_eq!(unique.len(), 6);
    for bad in ["nonsense", "MXwxMjM", "%ZZ"] {
        let reply = app
            .get(
                &format!("{}?cursor={bad}", tokens_path(&tenant)),
                &tenant.token,
            )
            .await;
        reply.assert_problem(400, "invalid_cursor");
    }
    for bad in ["0", "1001", "-1", "many"] {
        let reply = app
            .get(
                &format!("{}?limit={bad}", tokens_path(&tenant)),
                &tenant.token,
            )
            .await;
        reply.assert_problem(400, "invalid_query");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_key_header_is_accepted_and_scopes_are_listed() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let reply = app
        .send(
            app.request(Method::GET, "/v1/accounts/me", None)
                .header("X-API-Key", &tenant.token),
        )
        .await;
    reply.assert_status(200);
    let scopes = app
        .get(
            &format!("/v1/accounts/{}/scopes", tenant.account_id),
            &tenant.token,
        )
        .await;
    let values: Vec<Value> = scopes
        .assert_status(200)
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["value"].clone())
        .collect();
    assert!(values.contains(&json!("dev")));
    assert!(values.contains(&json!("server")));
    assert!(values.contains(&json!("metrics.read")));
    let anonymous = app
        .send(app.request(
            Method::GET,
            &format!("/v1/accounts/{}/scopes", tenant.account_id),
            None,
        ))
        .await;
    anonymous.assert_problem(401, "missing_authorization");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leaked_token_cannot_keep_itself_alive_by_rotating() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    // A leaked dev token rotates itself twice: the holder of the leak keeps the newest.
    let (leaked, leaked_id) = app.issue(&tenant, json!({ "kind": "dev" })).await;
    let once = app
        .send(app.request(Method::POST, "/v1/user-token/rotate", Some(&leaked)))
        .await;
    let once = once.assert_status(201)["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let twice = app
        .send(app.request(Method::POST, "/v1/user-token/rotate", Some(&once)))
        .await;
    let twice = twice.assert_status(201).clone();
    let newest = twice["token"].as_str().unwrap().to_owned();

    // Revoking the token the owner knows, with the chain: every successor stops.
    let path = format!("{}/{leaked_id}?chain=true", tokens_path(&tenant));
    let reply = app.delete(&path, &tenant.token).await;
    let body = reply.assert_status(202).clone();
    assert_eq!(body["message"], "token_chain_revoked");
    assert_eq!(body["revoked"].as_array().unwrap().len(), 3);
    for token in [&leaked, &once, &newest] {
        app.get("/v1/accounts/me", token)
            .await
            .assert_problem(401, "token_revoked");
    }
    let audit = app.audit(&tenant).await;
    let chain_revokes = audit
        .iter()
        .filter(|r| {
            r["action"] == "token.revoke" && r["metadata"]["chain_of"] == leaked_id.as_str()
        })
        .count();
    assert_eq!(chain_revokes, 3, "one audit record per token");
    let rotations: Vec<&Value> = audit
        .iter()
        .filter(|r| r["action"] == "token.rotate")
        .collect();
    assert_eq!(rotations.len(), 2);
    assert!(
        rotations
            .iter()
            .all(|r| r["metadata"]["old_token_id"].is_string())
    );

    // A plain revoke keeps its meaning: rotate, deploy the new one, revoke the old early.
    let (old, old_id) = app
        .issue(&tenant, json!({ "kind": "server", "app_name": "a" }))
        .await;
    let rotated = app
        .post(
            &format!("{}/{old_id}/rotate", tokens_path(&tenant)),
            &tenant.token,
            Value::Null,
        )
        .await;
    let new = rotated.assert_status(201)["token"]
        .as_str()
        .unwrap()
        .to_owned();
    app.delete(&format!("{}/{old_id}", tokens_path(&tenant)), &tenant.token)
        .await
        .assert_status(202);
    app.get("/v1/accounts/me", &old)
        .await
        .assert_problem(401, "token_revoked");
    app.get("/v1/accounts/me", &new).await.assert_status(200);

    // A server token cannot mint its own successor.
    app.send(app.request(Method::POST, "/v1/user-token/rotate", Some(&new)))
        .await
        .assert_problem(403, "self_rotation_refused");
    app.delete(
        &format!("{}/{old_id}?chain=maybe", tokens_path(&tenant)),
        &tenant.token,
    )
    .await
    .assert_problem(400, "invalid_query");
}
