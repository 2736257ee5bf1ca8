//! The operator's key maintenance (`d2ctl rotate-aes-key`, `rotate-jwks --all`,
//! `prune-signing-keys`) against a real database.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use d2_app::{App, Mode};
use d2_audit::{AuditAction, AuditEntry};
use d2_jwks::{Binding, FirstKey, KeyError, SealError, SigningKey};
use d2_kernel::AccountId;

use crate::harness::{TestApp, captured_logs, settings};
use crate::policy::{publishing_tenant, yaml_policy};

fn aes_key(byte: u8) -> String {
    URL_SAFE_NO_PAD.encode([byte; 32])
}

/// A one-shot application on the test database with the given AES keys.
async fn command_app(app: &TestApp, current: &str, previous: &str) -> App {
    command_app_with(app, current, previous, &[]).await
}

async fn command_app_with(
    app: &TestApp,
    current: &str,
    previous: &str,
    extra: &[(&str, &str)],
) -> App {
    let mut variables = vec![
        ("D2__CRYPTO__JWK_AES_KEY", current),
        ("D2__CRYPTO__JWK_AES_PREVIOUS_KEYS", previous),
        ("D2__JWKS__GRACE_SECONDS", "1"),
    ];
    variables.extend_from_slice(extra);
    let settings = settings(&app.db().url(), &app.pepper, &app.control_plane, &variables);
    App::build_with(settings, Arc::new(d2_kernel::SystemClock), Mode::Command)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn aes_rotation_reseals_every_key_resumes_after_interruption_and_keeps_signing() {
    let old = aes_key(1);
    let app = TestApp::spawn_with(&[("D2__CRYPTO__JWK_AES_KEY", &old)]).await;
    let mut tenants = Vec::new();
    for _ in 0..3 {
        let (tenant, dev, publisher) = publishing_tenant(&app).await;
        publisher.publish_tools(&app, &dev, "app", &["a"]).await;
        tenants.push((tenant, dev, publisher));
    }
    let kids_before: Vec<serde_json::Value> = {
        let mut kids = Vec::new();
        for (_, dev, _) in &tenants {
            kids.push(app.get("/.well-known/jwks.json", dev).await.body["keys"].clone());
        }
        kids
    };

    let new = aes_key(2);
    let rotating = command_app(&app, &new, &old).await;
    let repo = rotating.store.signing_keys();
    let current = rotating.policies.jwks().keyring().current_id().to_owned();
    assert_eq!(repo.count_to_reseal(&current).await.unwrap(), 3);

    // An interrupted run: one key was re-sealed before the process died.
    let first = repo.to_reseal(&current, 1).await.unwrap().remove(0);
    let resealed = rotating
        .policies
        .jwks()
        .keyring()
        .reseal(&first.sealed_private, first.owner())
        .unwrap();
    assert!(
        repo.reseal(&first.kid, &first.sealed_private, &resealed)
            .await
            .unwrap()
    );
    assert_eq!(repo.count_to_reseal(&current).await.unwrap(), 2);

    d2_cli::keys::rotate_aes_key(&rotating).await.unwrap();
    assert_eq!(repo.count_to_reseal(&current).await.unwrap(), 0);
    d2_cli::keys::rotate_aes_key(&rotating).await.unwrap();

    // With only the new AES key, every account still signs with its same key.
    let after = TestApp::spawn_on(
        app,
        &[
            ("D2__CRYPTO__JWK_AES_KEY", &new),
            ("D2__CRYPTO__JWK_AES_PREVIOUS_KEYS", ""),
        ],
    )
    .await;
    for ((_, dev, publisher), keys) in tenants.iter().zip(kids_before) {
        publisher
            .publish(
                &after,
                dev,
                yaml_policy("app", &["b"]).as_bytes(),
                "?app_name=app",
            )
            .await
            .assert_status(200);
        assert_eq!(
            after.get("/.well-known/jwks.json", dev).await.body["keys"],
            keys
        );
    }

    // Without the right AES key the command names the key it is missing.
    let stranger = command_app(&after, &aes_key(3), "").await;
    let error = d2_cli::keys::rotate_aes_key(&stranger)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("D2__CRYPTO__JWK_AES_PREVIOUS_KEYS"),
        "{error}"
    );
}

/// Seals an account's keys as releases before account binding did: bound to the key id
/// only, under the same AES key.
async fn seal_kid_only(operator: &App, account_id: AccountId) {
    let repo = operator.store.signing_keys();
    let keyring = operator.policies.jwks().keyring();
    for key in repo
        .keys(account_id, d2_jwks::KeyAlgorithm::Rs256)
        .await
        .unwrap()
    {
        let private = keyring.open(&key.sealed_private, key.owner()).unwrap();
        let legacy = keyring.seal_kid_only(&private, key.owner()).unwrap();
        assert_eq!(legacy.binding, Binding::KidOnly);
        assert!(
            repo.reseal(&key.kid, &key.sealed_private, &legacy)
                .await
                .unwrap()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_sealed_before_account_binding_are_rebound_and_then_do_not_open_in_another_account() {
    let aes = aes_key(4);
    let app = TestApp::spawn_with(&[("D2__CRYPTO__JWK_AES_KEY", &aes)]).await;
    let mut tenants = Vec::new();
    for _ in 0..2 {
        let (tenant, dev, publisher) = publishing_tenant(&app).await;
        publisher.publish_tools(&app, &dev, "app", &["a"]).await;
        let jwks = app.get("/.well-known/jwks.json", &dev).await.body["keys"].clone();
        tenants.push((tenant, dev, publisher, jwks));
    }
    let operator = command_app(&app, &aes, "").await;
    let repo = operator.store.signing_keys();
    let current = operator.policies.jwks().keyring().current_id().to_owned();
    assert_eq!(repo.count_to_reseal(&current).await.unwrap(), 0);
    for (tenant, ..) in &tenants {
        seal_kid_only(&operator, tenant.account_id.parse().unwrap()).await;
    }
    assert_eq!(
        repo.count_to_reseal(&current).await.unwrap(),
        2,
        "the AES key is current, the binding is not"
    );

    // Refusing legacy seals, neither the server nor the command opens them.
    let app = TestApp::spawn_on(
        app,
        &[
            ("D2__CRYPTO__JWK_AES_KEY", &aes),
            ("D2__CRYPTO__ACCEPT_LEGACY_SEALS", "false"),
        ],
    )
    .await;
    let (_, dev, publisher, _) = &tenants[0];
    publisher
        .publish(
            &app,
            dev,
            yaml_policy("app", &["b"]).as_bytes(),
            "?app_name=app",
        )
        .await
        .assert_problem(500, "internal_error");
    let refusing = command_app_with(
        &app,
        &aes,
        "",
        &[("D2__CRYPTO__ACCEPT_LEGACY_SEALS", "false")],
    )
    .await;
    let error = format!(
        "{:#}",
        d2_cli::keys::rotate_aes_key(&refusing).await.unwrap_err()
    );
    assert!(error.contains("D2__CRYPTO__ACCEPT_LEGACY_SEALS"), "{error}");
    assert_eq!(repo.count_to_reseal(&current).await.unwrap(), 2);

    // Accepting them (the default), the server signs with them and says so.
    let app = TestApp::spawn_on(app, &[("D2__CRYPTO__JWK_AES_KEY", &aes)]).await;
    let (tenant, dev, publisher, _) = &tenants[0];
    publisher
        .publish(
            &app,
            dev,
            yaml_policy("app", &["b"]).as_bytes(),
            "?app_name=app",
        )
        .await
        .assert_status(200);
    let kid = repo
        .keys(
            tenant.account_id.parse().unwrap(),
            d2_jwks::KeyAlgorithm::Rs256,
        )
        .await
        .unwrap()[0]
        .kid
        .clone();
    assert!(
        captured_logs()
            .lines()
            .any(|line| line.contains("without its account binding") && line.contains(&kid)),
        "a legacy key is logged when it is opened"
    );

    // The command re-seals them bound to their account, with the same AES key.
    d2_cli::keys::rotate_aes_key(&operator).await.unwrap();
    assert_eq!(repo.count_to_reseal(&current).await.unwrap(), 0);
    d2_cli::keys::rotate_aes_key(&operator).await.unwrap();

    // Now legacy seals can be refused: every account signs with its same key.
    let app = TestApp::spawn_on(
        app,
        &[
            ("D2__CRYPTO__JWK_AES_KEY", &aes),
            ("D2__CRYPTO__ACCEPT_LEGACY_SEALS", "false"),
            ("D2__JWKS__GRACE_SECONDS", "1"),
        ],
    )
    .await;
    for (_, dev, publisher, jwks) in &tenants {
        publisher
            .publish(
                &app,
                dev,
                yaml_policy("app", &["c"]).as_bytes(),
                "?app_name=app",
            )
            .await
            .assert_status(200);
        assert_eq!(
            &app.get("/.well-known/jwks.json", dev).await.body["keys"],
            jwks
        );
    }

    // The first account's key, once free to move (rotated out and pruned), is put in
    // another account's row: the same ciphertext, the same key id.
    let (first, ..) = &tenants[0];
    let first_account: AccountId = first.account_id.parse().unwrap();
    let moved = repo
        .keys(first_account, d2_jwks::KeyAlgorithm::Rs256)
        .await
        .unwrap()
        .remove(0);
    app.post("/v1/jwks/rotate", &first.token, serde_json::Value::Null)
        .await
        .assert_status(201);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    d2_cli::keys::prune_signing_keys(&operator).await.unwrap();
    let (other, other_dev, other_publisher) = publishing_tenant(&app).await;
    let other_account: AccountId = other.account_id.parse().unwrap();
    let planted = SigningKey {
        account_id: other_account,
        retired_at: None,
        ..moved.clone()
    };
    let audit = AuditEntry::system(other_account, AuditAction::KeyCreate, chrono::Utc::now());
    assert_eq!(
        repo.insert_first(&planted, &audit).await.unwrap(),
        FirstKey::Created
    );
    let stored = repo
        .keys(other_account, d2_jwks::KeyAlgorithm::Rs256)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(stored.kid, moved.kid);
    assert!(matches!(
        stored.signer(operator.policies.jwks().keyring()),
        Err(KeyError::Seal(SealError::Corrupt))
    ));
    let reply = other_publisher
        .publish(
            &app,
            &other_dev,
            yaml_policy("app", &["a"]).as_bytes(),
            "?app_name=app",
        )
        .await;
    reply.assert_problem(500, "internal_error");
    assert!(!reply.text.contains(&moved.kid), "{}", reply.text);

    // The command stops at it, naming the key, rather than re-sealing it for the account
    // it was moved to.
    let rotating = command_app(&app, &aes_key(5), &aes).await;
    let error = format!(
        "{:#}",
        d2_cli::keys::rotate_aes_key(&rotating).await.unwrap_err()
    );
    assert!(
        error.contains(&moved.kid) && error.contains("another account"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rotate_jwks_all_rotates_every_account_and_prune_removes_expired_keys() {
    let app = TestApp::spawn_with(&[("D2__JWKS__GRACE_SECONDS", "1")]).await;
    let mut tenants = Vec::new();
    for _ in 0..2 {
        let (tenant, dev, publisher) = publishing_tenant(&app).await;
        publisher.publish_tools(&app, &dev, "app", &["a"]).await;
        tenants.push((tenant, dev));
    }
    let operator = command_app(
        &app,
        &URL_SAFE_NO_PAD.encode(ring::digest::digest(
            &ring::digest::SHA256,
            app.pepper.as_bytes(),
        )),
        "",
    )
    .await;
    d2_cli::keys::rotate_jwks_all(&operator).await.unwrap();
    for (tenant, dev) in &tenants {
        let history = app.get("/v1/jwks/history", &tenant.token).await;
        assert_eq!(history.body["keys"].as_array().unwrap().len(), 2);
        let versions = app.get("/v1/policy/versions?app_name=app", dev).await;
        assert_eq!(versions.body[0]["version"], 2);
        assert!(versions.body[0]["rotation_id"].is_string());
        assert!(
            app.audit(tenant)
                .await
                .iter()
                .any(|r| r["action"] == "jwks.rotate" && r["actor"] == "control_plane")
        );
    }
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    d2_cli::keys::prune_signing_keys(&operator).await.unwrap();
    // The server learns of the deletion through the change feed.
    for (tenant, _) in &tenants {
        let mut keys = 0;
        for _ in 0..50 {
            keys = app.get("/v1/jwks/history", &tenant.token).await.body["keys"]
                .as_array()
                .unwrap()
                .len();
            if keys == 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(keys, 1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rotate_jwks_all_rotates_the_access_token_keys_of_their_own() {
    let es256 = ("D2__OAUTH__SIGNING_ALGORITHM", "ES256");
    let app = TestApp::spawn_with(&[es256]).await;
    let tenant = app.bootstrap().await;
    let client = crate::oauth::agent(&app, &tenant, crate::oauth::reports_agent()).await;
    crate::oauth::client_credentials(&app, &tenant, &client)
        .await
        .assert_status(200);
    let jwks = format!("/oauth/{}/jwks", tenant.account_id);
    let kids = |body: &serde_json::Value| -> Vec<String> {
        body["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect()
    };
    let before = kids(&app.get(&jwks, "").await.body);
    assert_eq!(before.len(), 1);
    let current = URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        app.pepper.as_bytes(),
    ));
    let operator = command_app_with(&app, &current, "", &[es256]).await;
    d2_cli::keys::rotate_jwks_all(&operator).await.unwrap();
    // The server learns of the new key through the change feed.
    let mut after = Vec::new();
    for _ in 0..50 {
        after = kids(&app.get(&jwks, "").await.body);
        if after.len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(after.len(), 2, "{after:?}");
    assert_eq!(
        after[1], before[0],
        "the old key stays published, after the new"
    );
    assert!(
        app.audit(&tenant)
            .await
            .iter()
            .any(|r| r["action"] == "jwks.rotate"
                && r["actor"] == "control_plane"
                && r["metadata"]["algorithm"] == "ES256")
    );
}
