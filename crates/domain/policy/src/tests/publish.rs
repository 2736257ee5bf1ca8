//! Publishing: signatures, versions, plan limits, revert and earlier content.

use super::*;

#[tokio::test]
async fn a_published_bundle_is_a_jws_the_published_jwks_verifies_with_safe_claims() {
    let w = world();
    let record = w
        .publish(
            &w.dev(),
            &policy("billing agent", &["reports.read"], true),
            Some("*"),
            false,
        )
        .await
        .unwrap();
    assert_eq!(record.version, 1);
    assert_eq!(record.app_name.as_str(), "billing_agent");
    let jws = record.jws.clone().unwrap();

    let set = w.policies.jwks().key_set(w.account).await.unwrap();
    let document: Value = serde_json::from_slice(&set.document.body).unwrap();
    let jwk = Jwk::from_bytes(serde_json::to_vec(&document["keys"][0]).unwrap()).unwrap();
    let (payload, header) =
        josekit::jws::deserialize_compact(&jws, &RS256.verifier_from_jwk(&jwk).unwrap()).unwrap();
    let payload: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(header.key_id(), record.kid.as_deref());
    assert_eq!(
        payload["aud"],
        format!("d2-policy:{}:billing_agent", w.account)
    );
    assert_eq!(payload["iss"], "d2-policy-service");
    assert!(
        payload["iat"].as_i64().unwrap() < w.clock.now().timestamp(),
        "iat is in the past"
    );
    assert!(payload["exp"].as_i64().unwrap() > w.clock.now().timestamp() + 86_400);
    assert!(payload["metadata"].is_object() && payload["policies"].is_array());
    assert!(payload["metadata"]["expires"].is_string());
    assert_eq!(record.etag.len(), 64);
    let actions: Vec<_> = w.audit.all().iter().map(|r| r.entry.action).collect();
    assert!(actions.contains(&AuditAction::KeyCreate));
    assert!(actions.contains(&AuditAction::PolicyPublish));
}

#[tokio::test]
async fn publishing_needs_a_good_signature_by_a_live_key_of_the_account() {
    let w = world();
    let body = serde_json::to_vec(&policy("app", &["a"], false)).unwrap();
    let good = STANDARD.encode(w.signer.sign(&body).as_ref());
    let key_id = w.register(&w.dev()).await;
    let attempt = |key: Option<String>, signature: Option<String>| {
        let policies = w.policies.clone();
        let ctx = w.dev();
        let body = body.clone();
        async move {
            let request = PublishRequest {
                app_name: Some("app"),
                body: &body,
                key_id: key.as_deref(),
                signature: signature.as_deref(),
                ..PublishRequest::default()
            };
            policies
                .publish(&ctx, request)
                .await
                .map(|_| ())
                .unwrap_err()
                .code()
        }
    };
    assert_eq!(
        attempt(None, Some(good.clone())).await,
        Code::SignatureRequired
    );
    assert_eq!(
        attempt(Some(key_id.clone()), None).await,
        Code::SignatureRequired
    );
    assert_eq!(
        attempt(Some("ed_000000000000".into()), Some(good.clone())).await,
        Code::UnknownPublisherKey
    );
    assert_eq!(
        attempt(Some(key_id.clone()), Some("not base64!".into())).await,
        Code::InvalidSignature
    );
    let other = STANDARD.encode(w.signer.sign(b"other bytes").as_ref());
    assert_eq!(
        attempt(Some(key_id.clone()), Some(other)).await,
        Code::InvalidSignature
    );

    // A key registered by another account is unknown here.
    let stranger = AccountId::random();
    w.accounts.insert_account(Account::new_trial(
        stranger,
        AccountName::parse("B").unwrap(),
        w.clock.now(),
        14,
    ));
    let theirs = caller(stranger, &[Grant::Dev], None);
    let request = PublishRequest {
        app_name: Some("app"),
        body: &body,
        key_id: Some(&key_id),
        signature: Some(&good),
        ..PublishRequest::default()
    };
    assert_eq!(
        w.policies
            .publish(&theirs, request)
            .await
            .unwrap_err()
            .code(),
        Code::UnknownPublisherKey
    );

    w.policies
        .publisher_keys()
        .revoke(&w.admin(), &key_id)
        .await
        .unwrap();
    assert_eq!(
        attempt(Some(key_id.clone()), Some(good)).await,
        Code::PublisherKeyRevoked
    );
    assert!(
        w.audit
            .all()
            .iter()
            .all(|r| r.entry.action != AuditAction::PolicyPublish),
        "nothing published"
    );
}

#[tokio::test]
async fn republishing_versions_go_up_and_if_match_guards_concurrent_edits() {
    let w = world();
    let first = w
        .publish(&w.dev(), &policy("app", &["a"], true), Some("*"), false)
        .await
        .unwrap();
    let second = w
        .publish(
            &w.dev(),
            &policy("app", &["a", "b"], true),
            Some("*"),
            false,
        )
        .await
        .unwrap();
    assert_eq!(second.version, 2);
    let quoted = format!("\"{}\"", second.etag);
    let third = w
        .publish(
            &w.dev(),
            &policy("app", &["a", "c"], true),
            Some(&quoted),
            false,
        )
        .await
        .unwrap();
    assert_eq!(third.version, 3);
    let stale = w
        .publish(
            &w.dev(),
            &policy("app", &["a"], true),
            Some(&first.etag),
            false,
        )
        .await;
    assert_eq!(stale.unwrap_err().code(), Code::EtagMismatch);
}

#[tokio::test]
async fn dropping_every_deny_rule_needs_force_which_is_audited() {
    let w = world();
    w.publish(&w.dev(), &policy("app", &["a"], true), None, false)
        .await
        .unwrap();
    let refused = w
        .publish(&w.dev(), &policy("app", &["a"], false), None, false)
        .await;
    assert_eq!(refused.unwrap_err().code(), Code::NoDenyRules);
    let forced = w
        .publish(&w.dev(), &policy("app", &["a"], false), None, true)
        .await
        .unwrap();
    assert_eq!(forced.version, 2);
    let record = w
        .audit
        .all()
        .into_iter()
        .rfind(|r| r.entry.action == AuditAction::PolicyPublish)
        .unwrap();
    assert_eq!(record.entry.metadata["force"], true);
}

#[tokio::test]
async fn plan_limits_apply_to_drafts_publishes_and_polls() {
    let w = world();
    let too_many = policy("app", &["a", "b", "c", "d", "e", "f"], false);
    assert_eq!(
        w.policies
            .save_draft(&w.dev(), too_many.clone())
            .await
            .unwrap_err()
            .code(),
        Code::ToolLimit
    );
    assert_eq!(
        w.publish(&w.dev(), &too_many, None, false)
            .await
            .unwrap_err()
            .code(),
        Code::ToolLimit
    );
    w.publish(&w.dev(), &policy("first", &["a"], false), None, false)
        .await
        .unwrap();
    let second_app = w
        .publish(&w.dev(), &policy("second", &["a"], false), None, false)
        .await;
    assert_eq!(
        second_app.unwrap_err().code(),
        Code::AppLimit,
        "a trial serves one app"
    );

    w.clock.advance(Duration::days(15));
    let server = caller(w.account, &[Grant::Server], Some("first"));
    let locked = w
        .policies
        .poll(&server, None, BundleStage::Auto, None)
        .await;
    assert_eq!(locked.unwrap_err().code(), Code::Locked);
    assert_eq!(
        w.publish(&w.dev(), &policy("first", &["a"], false), None, false)
            .await
            .unwrap_err()
            .code(),
        Code::Locked
    );
}

#[tokio::test]
async fn revert_serves_old_content_as_a_new_version_signed_with_the_current_key() {
    let w = world();
    let first = w
        .publish(&w.dev(), &policy("app", &["a"], false), None, false)
        .await
        .unwrap();
    w.publish(&w.dev(), &policy("app", &["a", "b"], false), None, false)
        .await
        .unwrap();
    let admin = w.admin();
    w.policies.rotate_signing_key(&admin).await.unwrap();
    let reverted = w.policies.revert(&admin, first.id).await.unwrap();
    assert_eq!(reverted.version, 4);
    assert_eq!(reverted.document["policies"], first.document["policies"]);
    let current = w
        .policies
        .jwks()
        .key_set(w.account)
        .await
        .unwrap()
        .active
        .clone()
        .unwrap();
    assert_eq!(reverted.kid.as_deref(), Some(current.kid.as_str()));
    assert_eq!(
        w.policies
            .revert(&admin, reverted.id)
            .await
            .unwrap_err()
            .code(),
        Code::PolicyAlreadyActive
    );
    assert_eq!(
        w.policies
            .revert(&w.dev(), first.id)
            .await
            .unwrap_err()
            .code(),
        Code::InsufficientScope
    );
}

#[tokio::test]
async fn publishing_an_earlier_versions_content_is_refused_and_revert_brings_it_back() {
    let w = world();
    let (dev, admin) = (w.dev(), w.admin());
    let first = w
        .publish(&dev, &policy("app", &["a"], false), Some("*"), false)
        .await
        .unwrap();
    let second = w
        .publish(&dev, &policy("app", &["a", "b"], false), Some("*"), false)
        .await
        .unwrap();
    let refused = w
        .publish(&dev, &policy("app", &["a"], false), Some("*"), false)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::IdenticalToVersion);
    let detail = refused.to_string();
    assert!(detail.contains("version 1"), "{detail}");
    assert!(detail.contains("POST /v1/policy/revert"), "{detail}");
    assert!(detail.contains(&first.id.to_string()), "{detail}");
    assert!(
        w.audit
            .all()
            .iter()
            .filter(|r| r.entry.action == AuditAction::PolicyPublish)
            .count()
            == 2,
        "nothing published"
    );

    // The active content may be published again (it renews the expiry).
    let renewed = w
        .publish(&dev, &policy("app", &["a", "b"], false), Some("*"), false)
        .await
        .unwrap();
    assert_eq!(renewed.version, 3);

    let reverted = w.policies.revert(&admin, first.id).await.unwrap();
    assert_eq!(reverted.version, 4);
    let revert = w
        .audit
        .all()
        .into_iter()
        .rfind(|r| r.entry.action == AuditAction::PolicyRevert)
        .unwrap();
    assert_eq!(revert.entry.metadata["from_version"], 1);
    assert_eq!(revert.entry.metadata["version"], 4);
    w.publish(&dev, &policy("app", &["a"], false), Some("*"), false)
        .await
        .unwrap();

    // The same content as YAML, members in another order: still the earlier version.
    let yaml = b"policies:\n  - permissions: [a, b]\n    role: analyst\nmetadata:\n  description: test\n  name: app\n";
    let signature = STANDARD.encode(w.signer.sign(yaml).as_ref());
    let key_id = w.register(&dev).await;
    let request = PublishRequest {
        body: yaml,
        key_id: Some(&key_id),
        signature: Some(&signature),
        if_match: Some("*"),
        ..PublishRequest::default()
    };
    let refused = w.policies.publish(&dev, request).await.unwrap_err();
    assert_eq!(refused.code(), Code::IdenticalToVersion);
    assert!(refused.to_string().contains("version 3"), "{refused}");

    // An edit from the editor is a publish too.
    let edit = serde_json::to_vec(&policy("app", &["a", "b"], false)).unwrap();
    let signature = STANDARD.encode(w.signer.sign(&edit).as_ref());
    let edited = w
        .policies
        .update_bundle(&dev, second.id, &edit, Some(&key_id), Some(&signature))
        .await;
    assert_eq!(edited.unwrap_err().code(), Code::IdenticalToVersion);
}
