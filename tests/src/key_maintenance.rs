//! The operator's key maintenance (`d2ctl rotate-aes-key`, `rotate-jwks --all`,
//! `prune-signing-keys`) against a real database.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use d2_app::{App, Mode};

use crate::harness::{TestApp, settings};
use crate::policy::{publishing_tenant, yaml_policy};

fn aes_key(byte: u8) -> String {
    URL_SAFE_NO_PAD.encode([byte; 32])
}

/// A one-shot application on the test database with the given AES keys.
async fn command_app(app: &TestApp, current: &str, previous: &str) -> App {
    let settings = settings(
        &app.db().url(),
        &app.pepper,
        &app.control_plane,
        &[
            ("D2__CRYPTO__JWK_AES_KEY", current),
            ("D2__CRYPTO__JWK_AES_PREVIOUS_KEYS", previous),
            ("D2__JWKS__GRACE_SECONDS", "1"),
        ],
    );
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
    assert_eq!(
        repo.count_sealed_with_other_keys(&current).await.unwrap(),
        3
    );

    // An interrupted run: one key was re-sealed before the process died.
    let first = repo
        .sealed_with_other_keys(&current, 1)
        .await
        .unwrap()
        .remove(0);
    let resealed = rotating
        .policies
        .jwks()
        .keyring()
        .reseal(&first.sealed_private, first.kid.as_bytes())
        .unwrap();
    assert!(
        repo.reseal(&first.kid, &first.sealed_private, &resealed)
            .await
            .unwrap()
    );
    assert_eq!(
        repo.count_sealed_with_other_keys(&current).await.unwrap(),
        2
    );

    d2_cli::keys::rotate_aes_key(&rotating).await.unwrap();
    assert_eq!(
        repo.count_sealed_with_other_keys(&current).await.unwrap(),
        0
    );
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
