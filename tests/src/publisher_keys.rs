//! Publisher keys: approval when the account requires it, and who may revoke a key.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Reply, Tenant, TestApp};
use crate::policy::{Publisher, yaml_policy};

/// The key `key_id` as `GET /v1/keys?include_revoked=true` lists it.
async fn listed(app: &TestApp, token: &str, key_id: &str) -> Value {
    let keys = app.get("/v1/keys?include_revoked=true", token).await;
    keys.assert_status(200)
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key_id"] == key_id)
        .cloned()
        .unwrap_or_else(|| panic!("{key_id} listed"))
}

async fn require_approval(app: &TestApp, tenant: &Tenant, required: bool) -> Reply {
    app.patch(
        "/v1/accounts/me",
        &tenant.token,
        json!({ "require_publisher_key_approval": required }),
    )
    .await
}

fn approve_path(key_id: &str) -> String {
    format!("/v1/keys/{key_id}/approve")
}

/// Registers a new key as `token` without asserting the status (a pending key is 201 too).
async fn register(app: &TestApp, token: &str) -> (Publisher, Reply) {
    let publisher = Publisher::generate();
    let reply = app
        .post(
            "/v1/keys",
            token,
            json!({ "public_key": publisher.public_key(), "key_id": publisher.key_id }),
        )
        .await;
    (publisher, reply)
}

#[tokio::test(flavor = "multi_thread")]
async fn with_approval_off_a_dev_token_registers_and_publishes_as_before() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let me = app.get("/v1/accounts/me", &tenant.token).await;
    assert_eq!(
        me.assert_status(200)["require_publisher_key_approval"],
        false
    );
    let (dev, _) = app.issue(&tenant, json!({ "kind": "dev" })).await;
    let (publisher, registered) = register(&app, &dev).await;
    let registered = registered.assert_status(201);
    assert_eq!(
        registered["message"],
        format!("key_added: {}", publisher.key_id)
    );
    assert_eq!(registered["state"], "active");
    publisher.publish_tools(&app, &dev, "app", &["a"]).await;
    let key = listed(&app, &dev, &publisher.key_id).await;
    assert_eq!(key["state"], "active");
    assert!(key["approved_at"].is_null() && key["approved_by"].is_null());
}

#[tokio::test(flavor = "multi_thread")]
async fn with_approval_on_a_dev_key_authorises_nothing_until_an_admin_approves_it() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let (dev, _) = app.issue(&tenant, json!({ "kind": "dev" })).await;
    let (before, _) = register(&app, &dev).await;

    // Only an admin changes the setting; the change is audited.
    app.patch(
        "/v1/accounts/me",
        &dev,
        json!({ "require_publisher_key_approval": true }),
    )
    .await
    .assert_problem(403, "insufficient_scope");
    let changed = require_approval(&app, &tenant, true).await;
    assert_eq!(
        changed.assert_status(200)["require_publisher_key_approval"],
        true
    );
    let me = app.get("/v1/accounts/me", &dev).await;
    assert_eq!(
        me.assert_status(200)["require_publisher_key_approval"],
        true
    );
    let update = app
        .audit(&tenant)
        .await
        .into_iter()
        .find(|r| r["action"] == "account.update")
        .unwrap();
    assert_eq!(
        update["metadata"]["changes"]["require_publisher_key_approval"],
        json!({ "old": false, "new": true })
    );

    let (pending, registered) = register(&app, &dev).await;
    assert_eq!(registered.assert_status(201)["state"], "pending");
    let again = register_again(&app, &dev, &pending).await;
    assert_eq!(again.assert_status(200)["state"], "pending");
    assert_eq!(
        listed(&app, &dev, &pending.key_id).await["state"],
        "pending"
    );

    let body = yaml_policy("app", &["a"]);
    let refused = pending
        .publish(&app, &dev, body.as_bytes(), "?app_name=app")
        .await;
    refused.assert_problem(403, "key_pending");
    assert!(
        refused.body["detail"]
            .as_str()
            .unwrap()
            .contains(&approve_path(&pending.key_id)),
        "{}",
        refused.text
    );
    // A key active before the setting was turned on stays active.
    before
        .publish(&app, &dev, body.as_bytes(), "?app_name=app")
        .await
        .assert_status(200);
    // An admin's key is active at once.
    let (_, admins) = register(&app, &tenant.token).await;
    assert_eq!(admins.assert_status(201)["state"], "active");

    app.post(&approve_path(&pending.key_id), &dev, Value::Null)
        .await
        .assert_problem(403, "insufficient_scope");
    app.post(&approve_path("ed_ffffffffffff"), &tenant.token, Value::Null)
        .await
        .assert_problem(404, "key_not_found");
    let approved = app
        .post(&approve_path(&pending.key_id), &tenant.token, Value::Null)
        .await;
    let approved = approved.assert_status(200).clone();
    assert_eq!(approved["key_id"], pending.key_id.as_str());
    assert_eq!(approved["state"], "active");
    assert_eq!(
        approved["approved_by"],
        format!("token:{}", tenant.token_id)
    );
    assert!(approved["approved_at"].is_string());
    let key = listed(&app, &dev, &pending.key_id).await;
    assert_eq!(
        (&key["state"], &key["approved_by"], &key["approved_at"]),
        (
            &approved["state"],
            &approved["approved_by"],
            &approved["approved_at"]
        )
    );
    let approvals = |trail: Vec<Value>| {
        trail
            .into_iter()
            .filter(|r| r["action"] == "key.approve")
            .collect::<Vec<_>>()
    };
    let recorded = approvals(app.audit(&tenant).await);
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0]["resource_id"], pending.key_id.as_str());
    assert_eq!(recorded[0]["token_id"], tenant.token_id.as_str());

    let changed = yaml_policy("app", &["a", "b"]);
    pending
        .publish(&app, &dev, changed.as_bytes(), "?app_name=app")
        .await
        .assert_status(200);
    // Approving an active key changes nothing and records nothing.
    let repeated = app
        .post(&approve_path(&pending.key_id), &tenant.token, Value::Null)
        .await;
    assert_eq!(repeated.assert_status(200), &approved);
    assert_eq!(approvals(app.audit(&tenant).await).len(), 1);

    // A pending key its registrant revoked is never approved.
    let (rejected, _) = register(&app, &dev).await;
    app.delete(&format!("/v1/keys/{}", rejected.key_id), &dev)
        .await
        .assert_status(202);
    app.post(&approve_path(&rejected.key_id), &tenant.token, Value::Null)
        .await
        .assert_problem(403, "key_revoked");
    assert_eq!(
        listed(&app, &dev, &rejected.key_id).await["state"],
        "revoked"
    );

    // Turning the setting off does not approve what is pending.
    let (waiting, _) = register(&app, &dev).await;
    require_approval(&app, &tenant, false)
        .await
        .assert_status(200);
    assert_eq!(
        listed(&app, &dev, &waiting.key_id).await["state"],
        "pending"
    );
}

/// Registers `publisher`'s key again (as the D2 CLI does before every publish).
async fn register_again(app: &TestApp, token: &str, publisher: &Publisher) -> Reply {
    app.post(
        "/v1/keys",
        token,
        json!({ "public_key": publisher.public_key() }),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn revoking_a_key_another_credential_registered_needs_an_admin() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let (dev, _) = app.issue(&tenant, json!({ "kind": "dev" })).await;
    let (other_dev, _) = app.issue(&tenant, json!({ "kind": "dev" })).await;
    let (admins, _) = register(&app, &tenant.token).await;
    let (mine, _) = register(&app, &dev).await;
    let (theirs, _) = register(&app, &other_dev).await;

    for key in [&admins, &theirs] {
        let refused = app.delete(&format!("/v1/keys/{}", key.key_id), &dev).await;
        refused.assert_problem(403, "key_owner_or_admin_required");
        assert_eq!(listed(&app, &dev, &key.key_id).await["state"], "active");
    }
    app.delete(&format!("/v1/keys/{}", mine.key_id), &dev)
        .await
        .assert_status(202);
    for key in [&theirs, &admins] {
        app.delete(&format!("/v1/keys/{}", key.key_id), &tenant.token)
            .await
            .assert_status(202);
    }
    for key in [&admins, &mine, &theirs] {
        assert_eq!(listed(&app, &dev, &key.key_id).await["state"], "revoked");
    }
    let revokes = app
        .audit(&tenant)
        .await
        .into_iter()
        .filter(|r| r["action"] == "key.revoke")
        .count();
    assert_eq!(revokes, 3, "refused revocations record nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn another_accounts_keys_can_be_neither_approved_nor_revoked() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    require_approval(&app, &tenant, true)
        .await
        .assert_status(200);
    let (dev, _) = app.issue(&tenant, json!({ "kind": "dev" })).await;
    let (pending, _) = register(&app, &dev).await;
    let (active, _) = register(&app, &tenant.token).await;

    let other = app.bootstrap().await;
    app.post(&approve_path(&pending.key_id), &other.token, Value::Null)
        .await
        .assert_problem(404, "key_not_found");
    for key in [&pending, &active] {
        app.delete(&format!("/v1/keys/{}", key.key_id), &other.token)
            .await
            .assert_problem(404, "key_not_found");
    }
    assert_eq!(
        listed(&app, &dev, &pending.key_id).await["state"],
        "pending"
    );
    assert_eq!(listed(&app, &dev, &active.key_id).await["state"], "active");
    assert!(
        app.audit(&other)
            .await
            .iter()
            .all(|r| r["action"] != "key.approve" && r["action"] != "key.revoke")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_settings_and_key_ids_are_4xx_and_change_nothing() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    // Read first, so that the credential is cached when the bodies are refused: a refused
    // body drops the request's credential lookup if one is in flight, and on SQLite a
    // query dropped half way panics the worker thread (a problem of its own, not this
    // test's subject).
    let before = app.get("/v1/accounts/me", &tenant.token).await;
    assert_eq!(
        before.assert_status(200)["require_publisher_key_approval"],
        false
    );
    for bad in [
        json!({ "require_publisher_key_approval": "yes" }),
        json!({ "require_publisher_key_approval": 1 }),
        json!({ "require_publisher_key_approval": null }),
        json!({ "require_publisher_key_approvals": true }),
    ] {
        let reply = app
            .patch("/v1/accounts/me", &tenant.token, bad.clone())
            .await;
        reply.assert_problem(400, "invalid_body");
    }
    let after = app.get("/v1/accounts/me", &tenant.token).await;
    assert_eq!(after.assert_status(200), &before.body);

    let long = format!("ed_{}", "f".repeat(4000));
    for key_id in [
        "nope",
        "ed_FFFFFFFFFFFF",
        long.as_str(),
        "%00",
        "ed_%E2%80%AE",
    ] {
        app.post(&approve_path(key_id), &tenant.token, Value::Null)
            .await
            .assert_problem(404, "key_not_found");
        app.delete(&format!("/v1/keys/{key_id}"), &tenant.token)
            .await
            .assert_problem(404, "key_not_found");
    }
    let with_body = app
        .send(
            app.request(
                Method::POST,
                &approve_path("ed_ffffffffffff"),
                Some(&tenant.token),
            )
            .header("content-type", "application/json")
            .body("{not json"),
        )
        .await;
    with_body.assert_problem(404, "key_not_found");
    assert!(
        app.audit(&tenant)
            .await
            .iter()
            .all(|r| r["action"] != "account.update" && r["action"] != "key.approve")
    );
    // The key must be Ed25519's 32 bytes, whatever the account's setting.
    app.post(
        "/v1/keys",
        &tenant.token,
        json!({ "public_key": STANDARD.encode([1u8; 33]) }),
    )
    .await
    .assert_problem(400, "invalid_public_key");
}
