//! Publishing, polling, revocation, reverting and keys through the real server.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use reqwest::Method;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};

use crate::harness::{Reply, Tenant, TestApp};

/// A publisher: an Ed25519 key registered with the account.
pub struct Publisher {
    pair: Ed25519KeyPair,
    pub key_id: String,
}

impl Publisher {
    /// A new key pair, not registered; its id is derived as the D2 SDK derives it.
    pub fn generate() -> Self {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let public: [u8; 32] = pair.public_key().as_ref().try_into().unwrap();
        Self {
            key_id: d2_policy::derive_key_id(&public),
            pair,
        }
    }

    pub fn public_key(&self) -> String {
        STANDARD.encode(self.pair.public_key().as_ref())
    }

    pub async fn register(app: &TestApp, token: &str) -> Self {
        let publisher = Self::generate();
        let reply = app
            .post(
                "/v1/keys",
                token,
                json!({ "public_key": publisher.public_key() }),
            )
            .await;
        assert_eq!(
            reply.assert_status(201)["key_id"],
            publisher.key_id.as_str()
        );
        publisher
    }

    pub fn sign(&self, body: &[u8]) -> String {
        STANDARD.encode(self.pair.sign(body).as_ref())
    }

    /// Publishes a policy granting `tools` for app `name`, which must succeed.
    pub async fn publish_tools(
        &self,
        app: &TestApp,
        token: &str,
        name: &str,
        tools: &[&str],
    ) -> Value {
        let query = format!("?app_name={name}");
        let reply = self
            .publish(app, token, yaml_policy(name, tools).as_bytes(), &query)
            .await;
        reply.assert_status(200).clone()
    }

    pub async fn publish(&self, app: &TestApp, token: &str, body: &[u8], query: &str) -> Reply {
        let request = app
            .request(
                Method::POST,
                &format!("/v1/policy/publish{query}"),
                Some(token),
            )
            .header("content-type", "application/octet-stream")
            .header("X-D2-Key-Id", &self.key_id)
            .header("X-D2-Signature", self.sign(body))
            .header("If-Match", "*")
            .body(body.to_vec());
        app.send(request).await
    }
}

/// A new account with a dev token and a registered publisher key.
pub async fn publishing_tenant(app: &TestApp) -> (Tenant, String, Publisher) {
    let tenant = app.bootstrap().await;
    let (dev, _) = app.issue(&tenant, json!({ "kind": "dev" })).await;
    let publisher = Publisher::register(app, &dev).await;
    (tenant, dev, publisher)
}

pub fn yaml_policy(app: &str, tools: &[&str]) -> String {
    let tools = tools
        .iter()
        .map(|t| format!("      - {t}\n"))
        .collect::<String>();
    format!(
        "metadata:\n  name: {app}\n  description: e2e\npolicies:\n  - role: analyst\n    permissions:\n{tools}      - tool: secrets.read\n        allow: false\n"
    )
}

fn decode(part: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

pub(crate) async fn server_token(app: &TestApp, tenant: &Tenant, app_name: &str) -> String {
    app.issue(tenant, json!({ "kind": "server", "app_name": app_name }))
        .await
        .0
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_poll_304_revoke_410_with_every_header_the_sdk_reads() {
    let app = TestApp::spawn().await;
    let (tenant, dev, publisher) = publishing_tenant(&app).await;
    let body = yaml_policy("billing agent", &["reports.read"]);
    let published = publisher
        .publish(&app, &dev, body.as_bytes(), "?app_name=billing%20agent")
        .await;
    let result = published.assert_status(200).clone();
    assert_eq!(result["version"], 1);
    assert_eq!(result["app_name"], "billing_agent");
    let etag = published.header("etag").unwrap().to_owned();
    assert_eq!(etag, format!("\"{}\"", result["etag"].as_str().unwrap()));
    assert_eq!(published.header("x-d2-poll-seconds"), Some("300"));

    let server = server_token(&app, &tenant, "billing agent").await;
    let poll = app.get("/v1/policy/bundle", &server).await;
    let bundle = poll.assert_status(200).clone();
    assert_eq!(bundle.as_object().unwrap().len(), 4);
    assert_eq!(bundle["jws"], result["jws"]);
    assert!(bundle["bundle"].is_null());
    assert_eq!(poll.header("etag"), Some(etag.as_str()));
    assert_eq!(poll.header("x-d2-poll-seconds"), Some("300"));
    let jws = bundle["jws"].as_str().unwrap();
    let parts: Vec<&str> = jws.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header = decode(parts[0]);
    assert_eq!(header["alg"], "RS256");
    let payload = decode(parts[1]);
    assert_eq!(
        payload["aud"],
        format!("d2-policy:{}:billing_agent", tenant.account_id)
    );
    assert_eq!(payload["metadata"]["name"], "billing agent");

    let not_modified = app
        .send(
            app.request(Method::GET, "/v1/policy/bundle", Some(&server))
                .header("If-None-Match", &etag),
        )
        .await;
    assert_eq!(not_modified.status, 304);
    assert!(not_modified.text.is_empty());
    assert_eq!(not_modified.header("etag"), Some(etag.as_str()));
    assert_eq!(not_modified.header("x-d2-poll-seconds"), Some("300"));

    // A dev token must name the app; the hint is the SDK's.
    let hint = app.get("/v1/policy/bundle", &dev).await;
    hint.assert_problem(404, "app_name_required");
    assert!(
        hint.body["detail"]
            .as_str()
            .unwrap()
            .contains("server tokens have automatic app resolution")
    );
    app.get("/v1/policy/bundle?app_name=billing_agent", &dev)
        .await
        .assert_status(200);

    let revoked = app
        .post(
            "/v1/policy/revoke?app_name=billing%20agent",
            &tenant.token,
            Value::Null,
        )
        .await;
    assert_eq!(revoked.assert_status(202)["revoked_versions"], 1);
    app.get("/v1/policy/bundle", &server)
        .await
        .assert_problem(410, "policy_revoked");
    app.post(
        "/v1/policy/revoke?app_name=billing_agent",
        &dev,
        Value::Null,
    )
    .await
    .assert_problem(403, "insufficient_scope");

    let trail = app.audit(&tenant).await;
    let actions: Vec<&str> = trail
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    for expected in [
        "key.upload",
        "jwks.key_create",
        "policy.publish",
        "policy.revoke",
    ] {
        assert!(actions.contains(&expected), "{expected} in {actions:?}");
    }
    let publish = trail
        .iter()
        .find(|r| r["action"] == "policy.publish")
        .unwrap();
    assert_eq!(publish["metadata"]["signature_verified"], true);
    assert_eq!(publish["metadata"]["key_id"], publisher.key_id.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn republishing_with_if_match_star_succeeds_and_a_stale_etag_is_409() {
    let app = TestApp::spawn().await;
    let (_, dev, publisher) = publishing_tenant(&app).await;
    let body = yaml_policy("app", &["a"]);
    let first = publisher
        .publish(&app, &dev, body.as_bytes(), "?app_name=app")
        .await;
    let first_etag = first.header("etag").unwrap().to_owned();
    let changed = yaml_policy("app", &["a", "b"]);
    let second = publisher
        .publish(&app, &dev, changed.as_bytes(), "?app_name=app")
        .await;
    assert_eq!(second.assert_status(200)["version"], 2);

    let stale = app
        .send(
            app.request(Method::POST, "/v1/policy/publish?app_name=app", Some(&dev))
                .header("X-D2-Key-Id", &publisher.key_id)
                .header("X-D2-Signature", publisher.sign(body.as_bytes()))
                .header("If-Match", &first_etag)
                .body(body.clone()),
        )
        .await;
    stale.assert_problem(409, "etag_mismatch");
    let rollback = publisher
        .publish(&app, &dev, body.as_bytes(), "?app_name=app&version=2")
        .await;
    rollback.assert_problem(409, "version_rollback");

    for bad in [
        json!({ "public_key": "%%%" }),
        json!({ "public_key": STANDARD.encode([1u8; 31]) }),
        json!({ "key": "x" }),
    ] {
        let reply = app.post("/v1/keys", &dev, bad.clone()).await;
        assert_eq!(reply.status, 400, "{bad}: {}", reply.text);
    }
    let mismatch = app
        .post(
            "/v1/keys",
            &dev,
            json!({ "public_key": STANDARD.encode([7u8; 32]), "key_id": "ed_000000000000" }),
        )
        .await;
    mismatch.assert_problem(400, "key_id_mismatch");
    // Registering the same key again is fine (the SDK does it before every publish).
    let again = app
        .post("/v1/keys", &dev, json!({ "public_key": STANDARD.encode(publisher.pair.public_key().as_ref()), "key_id": publisher.key_id }))
        .await;
    assert_eq!(
        again.assert_status(200)["key_id"],
        publisher.key_id.as_str()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn publishing_refuses_bad_signatures_documents_and_plan_overruns_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let (tenant, dev, publisher) = publishing_tenant(&app).await;
    let body = yaml_policy("app", &["a"]);
    let raw = |headers: &[(&str, String)], body: Vec<u8>| {
        let mut request = app.request(Method::POST, "/v1/policy/publish?app_name=app", Some(&dev));
        for (name, value) in headers {
            request = request.header(*name, value.as_str());
        }
        request.body(body)
    };
    let key = ("X-D2-Key-Id", publisher.key_id.clone());
    let good = ("X-D2-Signature", publisher.sign(body.as_bytes()));
    let cases = [
        (
            raw(std::slice::from_ref(&key), body.clone().into_bytes()),
            401,
            "signature_required",
        ),
        (
            raw(std::slice::from_ref(&good), body.clone().into_bytes()),
            401,
            "signature_required",
        ),
        (
            raw(
                &[("X-D2-Key-Id", "ed_000000000000".into()), good.clone()],
                body.clone().into_bytes(),
            ),
            403,
            "unknown_key",
        ),
        (
            raw(
                &[key.clone(), ("X-D2-Signature", "%%%not-base64".into())],
                body.clone().into_bytes(),
            ),
            403,
            "invalid_signature",
        ),
        (
            raw(
                &[key.clone(), ("X-D2-Signature", publisher.sign(b"other"))],
                body.clone().into_bytes(),
            ),
            403,
            "invalid_signature",
        ),
    ];
    for (request, status, code) in cases {
        app.send(request).await.assert_problem(status, code);
    }
    let signed = |bytes: &[u8]| {
        raw(
            &[key.clone(), ("X-D2-Signature", publisher.sign(bytes))],
            bytes.to_vec(),
        )
    };
    let invalid = app
        .send(signed(b"metadata:\n  name: app\npolicies: []\n"))
        .await;
    invalid.assert_problem(400, "policy_validation_failed");
    assert!(
        invalid.body["detail"]
            .as_str()
            .unwrap()
            .contains("`policies` must not be empty")
    );
    app.send(signed(b"{ not yaml: ["))
        .await
        .assert_problem(400, "policy_validation_failed");
    app.send(signed(yaml_policy("other-app", &["a"]).as_bytes()))
        .await
        .assert_problem(400, "app_name_mismatch");
    let six_tools = yaml_policy("app", &["a", "b", "c", "d", "e", "f"]);
    app.send(signed(six_tools.as_bytes()))
        .await
        .assert_problem(402, "tool_limit");
    let huge = format!(
        "metadata:\n  name: app\n  description: \"{}\"\npolicies:\n  - role: r\n    permissions: [a]\n",
        "x".repeat(600 * 1024)
    );
    app.send(signed(huge.as_bytes()))
        .await
        .assert_problem(413, "bundle_too_large");
    let reserved = "metadata:\n  name: app\nexp: 1\npolicies:\n  - role: r\n    permissions: [a]\n";
    app.send(signed(reserved.as_bytes()))
        .await
        .assert_problem(400, "policy_validation_failed");

    let server = app
        .issue(&tenant, json!({ "kind": "server", "app_name": "app" }))
        .await
        .0;
    app.get("/v1/policy/bundle", &server)
        .await
        .assert_problem(404, "policy_not_found");
    assert!(
        app.audit(&tenant)
            .await
            .iter()
            .all(|r| r["action"] != "policy.publish")
    );

    // A dev token of another account cannot use this account's key.
    let other = app.bootstrap().await;
    let (other_dev, _) = app.issue(&other, json!({})).await;
    let foreign = app
        .send(
            app.request(
                Method::POST,
                "/v1/policy/publish?app_name=app",
                Some(&other_dev),
            )
            .header("X-D2-Key-Id", &publisher.key_id)
            .header("X-D2-Signature", publisher.sign(body.as_bytes()))
            .body(body.clone()),
        )
        .await;
    foreign.assert_problem(403, "unknown_key");

    // Revoked keys stop authorising.
    app.delete(&format!("/v1/keys/{}", publisher.key_id), &dev)
        .await
        .assert_status(202);
    app.send(signed(body.as_bytes()))
        .await
        .assert_problem(403, "key_revoked");
    app.delete("/v1/keys/ed_ffffffffffff", &dev)
        .await
        .assert_problem(404, "key_not_found");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_locked_account_gets_402_locked_on_poll_and_publish() {
    let app = TestApp::spawn().await;
    let (tenant, dev, publisher) = publishing_tenant(&app).await;
    publisher.publish_tools(&app, &dev, "app", &["a"]).await;
    let server = app
        .issue(&tenant, json!({ "kind": "server", "app_name": "app" }))
        .await
        .0;
    app.advance(15 * 24 * 3600);
    app.get("/v1/policy/bundle", &server)
        .await
        .assert_problem(402, "locked");
    let publish = publisher
        .publish(
            &app,
            &dev,
            yaml_policy("app", &["a"]).as_bytes(),
            "?app_name=app",
        )
        .await;
    publish.assert_problem(402, "locked");
}

#[tokio::test(flavor = "multi_thread")]
async fn drafts_versions_revert_and_the_editor_routes() {
    let app = TestApp::spawn().await;
    let (tenant, dev, publisher) = publishing_tenant(&app).await;
    let document = json!({ "metadata": { "name": "app", "description": "d" }, "policies": [{ "role": ["a", "b"], "permissions": ["x", { "tool": "y", "allow": false }] }] });
    let draft = app
        .send(
            app.request(Method::PUT, "/v1/policy/draft", Some(&dev))
                .json(&json!({ "bundle": document })),
        )
        .await;
    let draft = draft.assert_status(200).clone();
    assert_eq!(draft["version"], 1);
    let first = publisher
        .publish(
            &app,
            &dev,
            yaml_policy("app", &["a"]).as_bytes(),
            "?app_name=app",
        )
        .await;
    let first = first.assert_status(200).clone();
    publisher
        .publish(
            &app,
            &dev,
            yaml_policy("app", &["b"]).as_bytes(),
            "?app_name=app",
        )
        .await
        .assert_status(200);

    let versions = app.get("/v1/policy/versions?app_name=app", &dev).await;
    let versions = versions.assert_status(200).as_array().unwrap().clone();
    assert_eq!(
        versions
            .iter()
            .map(|v| v["version"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [3, 2]
    );
    assert_eq!(versions[0]["active"], true);

    let reverted = app
        .post(
            "/v1/policy/revert",
            &tenant.token,
            json!({ "policy_id": first["policy_id"] }),
        )
        .await;
    let reverted = reverted.assert_status(200).clone();
    assert_eq!(reverted["version"], 4);
    assert!(reverted["active"].as_bool().unwrap());
    app.post(
        "/v1/policy/revert",
        &tenant.token,
        json!({ "policy_id": reverted["id"] }),
    )
    .await
    .assert_problem(409, "policy_already_active");
    app.post(
        "/v1/policy/revert",
        &dev,
        json!({ "policy_id": first["policy_id"] }),
    )
    .await
    .assert_problem(403, "insufficient_scope");

    let id = reverted["id"].as_str().unwrap();
    let described = app
        .patch(
            &format!("/v1/policy/{id}/description"),
            &dev,
            json!({ "description": "rollback" }),
        )
        .await;
    assert_eq!(described.assert_status(200)["description"], "rollback");
    let fetched = app.get(&format!("/v1/policy/{id}"), &dev).await;
    assert_eq!(
        fetched.assert_status(200)["bundle"]["metadata"]["name"],
        "app"
    );

    // Editing a published version publishes a new signed version, with a signature.
    let edited = serde_json::to_vec(&json!({ "metadata": { "name": "app" }, "policies": [{ "role": "r", "permissions": ["z", "!y"] }] })).unwrap();
    let unsigned = app
        .send(
            app.request(
                Method::PATCH,
                &format!("/v1/policy/{id}/bundle"),
                Some(&dev),
            )
            .body(edited.clone()),
        )
        .await;
    unsigned.assert_problem(401, "signature_required");
    let signed = app
        .send(
            app.request(
                Method::PATCH,
                &format!("/v1/policy/{id}/bundle"),
                Some(&dev),
            )
            .header("X-D2-Key-Id", &publisher.key_id)
            .header("X-D2-Signature", publisher.sign(&edited))
            .body(edited),
        )
        .await;
    assert_eq!(signed.assert_status(200)["version"], 5);
    assert_eq!(
        app.get(&format!("/v1/policy/{id}"), &dev).await.body["version"],
        4,
        "the old row is untouched"
    );

    let apps = app.get("/v1/policy/apps", &dev).await;
    assert_eq!(apps.assert_status(200), &json!(["app", "default"]));
    let roles = app
        .get("/v1/policy/roles-permissions?app_name=app", &dev)
        .await;
    assert_eq!(roles.assert_status(200)["roles"], json!(["r"]));
    let list = app.get("/v1/policy/list?limit=2", &dev).await;
    assert_eq!(list.assert_status(200).as_array().unwrap().len(), 2);
    assert!(list.header("x-next-cursor").is_some());

    let validation = app
        .post(
            "/v1/policy/validate",
            &dev,
            json!({ "bundle": { "metadata": {}, "policies": [] } }),
        )
        .await;
    let validation = validation.assert_status(200).clone();
    assert_eq!(validation["valid"], false);
    assert!(validation["errors"].as_array().unwrap().len() >= 2);
    let fine = app
        .post("/v1/policy/validate", &dev, json!({ "bundle": document }))
        .await;
    assert_eq!(fine.assert_status(200)["valid"], true);

    let actions: Vec<String> = app
        .audit(&tenant)
        .await
        .iter()
        .map(|r| r["action"].as_str().unwrap().to_owned())
        .collect();
    for expected in ["policy.draft", "policy.revert", "policy.update"] {
        assert!(actions.iter().any(|a| a == expected), "{expected}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn jwks_serves_one_accounts_keys_and_rotation_resigns_with_hints() {
    let app = TestApp::spawn().await;
    let (tenant, dev, publisher) = publishing_tenant(&app).await;
    publisher.publish_tools(&app, &dev, "app", &["a"]).await;

    let anonymous = app
        .send(app.request(Method::GET, "/.well-known/jwks.json", None))
        .await;
    anonymous.assert_problem(400, "account_required");
    let unknown = app
        .send(app.request(
            Method::GET,
            &format!("/.well-known/jwks.json?account_id={}", uuid::Uuid::new_v4()),
            None,
        ))
        .await;
    unknown.assert_problem(404, "account_not_found");
    app.send(app.request(Method::GET, "/.well-known/jwks.json?account_id=nope", None))
        .await
        .assert_problem(400, "invalid_query");

    let by_token = app.get("/.well-known/jwks.json", &dev).await;
    let keys = by_token.assert_status(200)["keys"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(keys.len(), 1);
    assert!(keys[0].get("d").is_none() && keys[0]["kty"] == "RSA");
    // The same URL answers each caller its own account's keys: no shared cache may keep it.
    let private = |reply: &crate::harness::Reply| {
        assert!(
            reply
                .header("cache-control")
                .unwrap()
                .starts_with("private, max-age="),
            "{:?}",
            reply.headers
        );
        let vary = reply.header("vary").unwrap().to_ascii_lowercase();
        assert!(vary.contains("authorization") && vary.contains("x-api-key"));
    };
    private(&by_token);
    let etag = by_token.header("etag").unwrap().to_owned();
    let by_id = app
        .send(app.request(
            Method::GET,
            &format!("/.well-known/jwks.json?account_id={}", tenant.account_id),
            None,
        ))
        .await;
    assert_eq!(by_id.assert_status(200)["keys"], json!(keys));
    // The URL names the account: the same answer for everyone, cacheable by anyone.
    assert!(
        by_id
            .header("cache-control")
            .unwrap()
            .starts_with("public, max-age=")
    );
    let cached = app
        .send(
            app.request(Method::GET, "/.well-known/jwks.json", Some(&dev))
                .header("If-None-Match", &etag),
        )
        .await;
    assert_eq!(cached.status, 304);
    private(&cached);

    // Another tenant's token cannot read these keys through the filter.
    let other = app.bootstrap().await;
    let foreign = app
        .get(
            &format!("/.well-known/jwks.json?account_id={}", tenant.account_id),
            &other.token,
        )
        .await;
    foreign.assert_problem(403, "account_mismatch");
    assert_eq!(
        app.get("/.well-known/jwks.json", &other.token).await.body["keys"],
        json!([])
    );

    let old_kid = keys[0]["kid"].as_str().unwrap().to_owned();
    app.post("/v1/jwks/rotate", &dev, Value::Null)
        .await
        .assert_problem(403, "insufficient_scope");
    let rotated = app
        .post("/v1/jwks/rotate", &tenant.token, Value::Null)
        .await;
    let rotated = rotated.assert_status(201).clone();
    assert_eq!(rotated["previous_key_id"], old_kid.as_str());
    assert_eq!(
        rotated["resigned"],
        json!([{ "app_name": "app", "version": 2 }])
    );
    assert_eq!(
        rotated["access_token_key"],
        Value::Null,
        "RS256 access tokens share the bundle key"
    );
    let after = app.get("/.well-known/jwks.json", &dev).await;
    let kids: Vec<&str> = after.body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert!(
        kids.contains(&old_kid.as_str()) && kids.contains(&rotated["new_key_id"].as_str().unwrap())
    );

    let server = app
        .issue(&tenant, json!({ "kind": "server", "app_name": "app" }))
        .await
        .0;
    let bundle = app.get("/v1/policy/bundle", &server).await;
    let header = decode(
        bundle.body["jws"]
            .as_str()
            .unwrap()
            .split('.')
            .next()
            .unwrap(),
    );
    assert_eq!(header["kid"], rotated["new_key_id"]);
    assert_eq!(header["jwks_refresh"], true);
    assert_eq!(header["new_kid"], rotated["new_key_id"]);
    assert_eq!(header["reason"], header["refresh_reason"]);

    let configuration = app.get("/v1/jwks/configuration", &tenant.token).await;
    assert_eq!(
        configuration.assert_status(200)["current_key_id"],
        rotated["new_key_id"]
    );
    let history = app.get("/v1/jwks/history", &tenant.token).await;
    assert_eq!(history.assert_status(200)["total_rotations"], 1);
    app.get("/v1/jwks/history", &dev)
        .await
        .assert_problem(403, "insufficient_scope");
    assert!(
        app.audit(&tenant)
            .await
            .iter()
            .any(|r| r["action"] == "jwks.rotate")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn another_accounts_policies_and_keys_are_invisible() {
    let app = TestApp::spawn().await;
    let (tenant, dev, publisher) = publishing_tenant(&app).await;
    let published = publisher
        .publish(
            &app,
            &dev,
            yaml_policy("app", &["a"]).as_bytes(),
            "?app_name=app",
        )
        .await;
    let id = published.body["policy_id"].as_str().unwrap().to_owned();

    let other = app.bootstrap().await;
    let (their_dev, _) = app.issue(&other, json!({})).await;
    app.get(&format!("/v1/policy/{id}"), &their_dev)
        .await
        .assert_problem(404, "policy_not_found");
    app.patch(
        &format!("/v1/policy/{id}/description"),
        &their_dev,
        json!({ "description": "x" }),
    )
    .await
    .assert_problem(404, "policy_not_found");
    app.post(
        "/v1/policy/revert",
        &other.token,
        json!({ "policy_id": id }),
    )
    .await
    .assert_problem(404, "policy_not_found");
    app.get("/v1/policy/bundle?app_name=app", &their_dev)
        .await
        .assert_problem(404, "policy_not_found");
    app.post("/v1/policy/revoke?app_name=app", &other.token, Value::Null)
        .await
        .assert_problem(404, "policy_not_found");
    assert_eq!(
        app.get("/v1/policy/versions?app_name=app", &their_dev)
            .await
            .body,
        json!([])
    );
    assert_eq!(app.get("/v1/keys", &their_dev).await.body, json!([]));
    app.delete(&format!("/v1/keys/{}", publisher.key_id), &their_dev)
        .await
        .assert_problem(404, "key_not_found");
    // Untouched on our side.
    let server = app
        .issue(&tenant, json!({ "kind": "server", "app_name": "app" }))
        .await
        .0;
    app.get("/v1/policy/bundle", &server)
        .await
        .assert_status(200);
    assert_eq!(
        app.get("/v1/keys", &dev)
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_absurd_explicit_version_is_refused_and_wedges_neither_the_app_nor_key_rotation() {
    let app = TestApp::spawn().await;
    let (tenant, dev, publisher) = publishing_tenant(&app).await;
    publisher.publish_tools(&app, &dev, "app", &["a"]).await;
    let body = yaml_policy("app", &["a", "b"]);
    for absurd in [
        "9223372036854775807",
        "9007199254740993",
        "9007199254740992",
        "1000002",
    ] {
        let reply = publisher
            .publish(
                &app,
                &dev,
                body.as_bytes(),
                &format!("?app_name=app&version={absurd}"),
            )
            .await;
        assert_eq!(reply.status, 400, "{absurd}: {}", reply.text);
        if reply.header("content-type") == Some("application/problem+json")
            && reply.body["code"] == "version_out_of_range"
        {
            continue;
        }
        reply.assert_problem(400, "invalid_query");
    }
    // The furthest allowed skip is taken, and the app goes on from there.
    let skipped = publisher
        .publish(&app, &dev, body.as_bytes(), "?app_name=app&version=1000001")
        .await;
    assert_eq!(skipped.assert_status(200)["version"], 1_000_001);
    let next = publisher
        .publish(
            &app,
            &dev,
            yaml_policy("app", &["c"]).as_bytes(),
            "?app_name=app",
        )
        .await;
    assert_eq!(next.assert_status(200)["version"], 1_000_002);
    app.post("/v1/jwks/rotate", &tenant.token, Value::Null)
        .await
        .assert_status(201);
    let polled = app.get("/v1/policy/bundle?app_name=app", &dev).await;
    assert!(polled.assert_status(200)["version"].as_i64().unwrap() > 1_000_002);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_token_sees_only_its_own_app_and_dev_tokens_see_every_app() {
    let app = TestApp::spawn_with(&[("D2__PLANS__TRIAL__MAX_APPS", "5")]).await;
    let (tenant, dev, publisher) = publishing_tenant(&app).await;
    let mut ids = std::collections::HashMap::new();
    for name in ["a", "b"] {
        let published = publisher.publish_tools(&app, &dev, name, &["t"]).await;
        let draft = json!({ "bundle": { "metadata": { "name": name }, "policies": [{ "role": "r", "permissions": ["t"] }] } });
        app.send(
            app.request(Method::PUT, "/v1/policy/draft", Some(&dev))
                .json(&draft),
        )
        .await
        .assert_status(200);
        ids.insert(name, published["policy_id"].as_str().unwrap().to_owned());
    }
    let server = server_token(&app, &tenant, "a").await;

    let reads = |name: &str| {
        vec![
            format!("/v1/policy/bundle?app_name={name}"),
            format!("/v1/policy/bundle?app_name={name}&stage=published"),
            format!("/v1/policy/bundle?app_name={name}&stage=draft"),
            format!("/v1/policy/versions?app_name={name}"),
            format!("/v1/policy/roles-permissions?app_name={name}"),
            format!("/v1/policy/{}", ids[name]),
        ]
    };
    for path in reads("a") {
        app.get(&path, &server).await.assert_status(200);
        app.get(&path, &dev).await.assert_status(200);
    }
    for path in reads("b") {
        app.get(&path, &server)
            .await
            .assert_problem(404, "policy_not_found");
        app.get(&path, &dev).await.assert_status(200);
    }
    // Without a name, the token's own app.
    app.get("/v1/policy/bundle", &server)
        .await
        .assert_status(200);

    let apps_of = |reply: &Value| {
        let mut apps: Vec<String> = reply
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["app_name"].as_str().unwrap().to_owned())
            .collect();
        apps.sort();
        apps.dedup();
        apps
    };
    let listed = app.get("/v1/policy/list?limit=100", &server).await;
    assert_eq!(apps_of(listed.assert_status(200)), ["a"]);
    let listed = app.get("/v1/policy/list?limit=100", &dev).await;
    assert_eq!(apps_of(listed.assert_status(200)), ["a", "b"]);
    assert_eq!(
        app.get("/v1/policy/apps", &server).await.assert_status(200),
        &json!(["a"])
    );
    assert_eq!(
        app.get("/v1/policy/apps", &dev).await.assert_status(200),
        &json!(["a", "b", "default"])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn key_rotations_are_limited_per_account_with_retry_after() {
    let app = TestApp::spawn_with(&[("D2__JWKS__MAX_ROTATIONS_PER_HOUR", "2")]).await;
    let (tenant, dev, publisher) = publishing_tenant(&app).await;
    publisher.publish_tools(&app, &dev, "app", &["a"]).await;
    for _ in 0..2 {
        app.post("/v1/jwks/rotate", &tenant.token, Value::Null)
            .await
            .assert_status(201);
    }
    let refused = app
        .post("/v1/jwks/rotate", &tenant.token, Value::Null)
        .await;
    refused.assert_problem(429, "rate_limited");
    let retry_after: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    // One rotation comes back every half hour at 2 per hour.
    assert!((1..=1800).contains(&retry_after), "{retry_after}");
    assert_eq!(refused.header("x-ratelimit-limit"), Some("2"));
    assert_eq!(refused.header("x-ratelimit-remaining"), Some("0"));
    // Nothing was rotated by the refused request.
    let history = app.get("/v1/jwks/history", &tenant.token).await;
    assert_eq!(history.assert_status(200)["total_rotations"], 2);

    // Another account has its own allowance.
    let other = app.bootstrap().await;
    app.post("/v1/jwks/rotate", &other.token, Value::Null)
        .await
        .assert_status(201);
}

/// Sends only the head of a request that announces `length` bytes, and reads the answer:
/// a route that checks before reading answers at once.
async fn announce_body(
    app: &TestApp,
    method: &str,
    path: &str,
    token: &str,
    length: usize,
) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let address = app.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    // A generous bound that only matters when the server waits for the body it announced.
    let read = tokio::time::timeout(std::time::Duration::from_secs(30), stream.read(&mut answer))
        .await
        .expect("answered without the body")
        .unwrap();
    String::from_utf8_lossy(&answer[..read]).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn policy_bodies_are_capped_by_the_plan_and_checked_before_they_are_read() {
    let app = TestApp::spawn().await;
    let (tenant, dev, _) = publishing_tenant(&app).await;
    let server = server_token(&app, &tenant, "app").await;
    // The trial allows 512 KiB bundles: a 1 MiB policy is refused as a body, unparsed.
    let huge = json!({ "bundle": {
        "metadata": { "name": "app", "description": "x".repeat(1024 * 1024) },
        "policies": [{ "role": "r", "permissions": ["t"] }]
    }});
    for (method, path) in [
        (Method::PUT, "/v1/policy/draft"),
        (Method::POST, "/v1/policy/validate"),
        (Method::POST, "/v1/policy/publish"),
    ] {
        let reply = app
            .send(app.request(method, path, Some(&dev)).json(&huge))
            .await;
        reply.assert_problem(413, "bundle_too_large");
    }
    // Announced sizes are refused before a byte of the body is read: over the plan, or by
    // a credential that may not use the route at all.
    let answer = announce_body(&app, "PUT", "/v1/policy/draft", &dev, 50_000_000).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let answer = announce_body(&app, "PUT", "/v1/policy/draft", &server, 100_000).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    // Within the plan, nothing changes.
    let fine = json!({ "bundle": {
        "metadata": { "name": "app", "description": "x".repeat(400 * 1024) },
        "policies": [{ "role": "r", "permissions": ["t"] }]
    }});
    app.send(
        app.request(Method::PUT, "/v1/policy/draft", Some(&dev))
            .json(&fine),
    )
    .await
    .assert_status(200);
}

#[tokio::test(flavor = "multi_thread")]
async fn drafts_take_an_app_and_versions_come_in_pages_with_documents_only_when_asked() {
    let app = TestApp::spawn().await; // trial: one app
    let (_, dev, publisher) = publishing_tenant(&app).await;
    publisher.publish_tools(&app, &dev, "first", &["t"]).await;
    let draft_of = |name: &str| {
        json!({ "bundle": {
            "metadata": { "name": name }, "policies": [{ "role": "r", "permissions": ["t"] }]
        }})
    };
    // A draft of the same app is fine; a draft of a second app takes a second app.
    app.send(
        app.request(Method::PUT, "/v1/policy/draft", Some(&dev))
            .json(&draft_of("first")),
    )
    .await
    .assert_status(200);
    app.send(
        app.request(Method::PUT, "/v1/policy/draft", Some(&dev))
            .json(&draft_of("second")),
    )
    .await
    .assert_problem(402, "app_limit");
    let apps = app.get("/v1/policy/apps", &dev).await;
    assert_eq!(apps.assert_status(200), &json!(["default", "first"]));

    for tools in [["a"], ["b"], ["c"]] {
        publisher.publish_tools(&app, &dev, "first", &tools).await;
    }
    let page = app
        .get("/v1/policy/versions?app_name=first&limit=2", &dev)
        .await;
    let items = page.assert_status(200).as_array().unwrap().clone();
    assert_eq!(items.len(), 2);
    assert!(
        items
            .iter()
            .all(|v| v.get("bundle").is_none() && v.get("jws").is_none())
    );
    let cursor = page
        .header("x-next-cursor")
        .expect("another page")
        .to_owned();
    let rest = app
        .get(
            &format!("/v1/policy/versions?app_name=first&limit=100&include_jws=true&include_bundle=true&cursor={cursor}"),
            &dev,
        )
        .await;
    let rest = rest.assert_status(200).as_array().unwrap().clone();
    assert!(!rest.is_empty());
    assert!(rest.iter().all(|v| v["bundle"].is_object()));
    assert!(
        rest.iter()
            .filter(|v| v["stage"] == "published")
            .all(|v| v["jws"].is_string())
    );
    let versions: Vec<i64> = items
        .iter()
        .chain(&rest)
        .map(|v| v["version"].as_i64().unwrap())
        .collect();
    let mut sorted = versions.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    sorted.dedup();
    assert_eq!(versions, sorted, "newest first, no repeats across pages");
    app.get("/v1/policy/versions?app_name=first&limit=0", &dev)
        .await
        .assert_problem(400, "invalid_query");
}
