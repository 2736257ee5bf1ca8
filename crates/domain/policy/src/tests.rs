//! Rules of the policy domain, against the in-memory ports.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::Duration;
use d2_accounts::memory::MemoryAccountRepo;
use d2_accounts::{Account, AccountName, AccountPatch, AccountService, SamplingPolicy};
use d2_audit::AuditAction;
use d2_audit::memory::MemoryAuditLog;
use d2_jwks::memory::MemorySigningKeys;
use d2_jwks::{AesKey, Jwks, Keyring};
use d2_kernel::{
    AccountId, AppName, AuthContext, CacheSettings, Clock, Code, Credential, ErrorCode, Grant,
    ManualClock, PageRequest, PlanCatalog, ScopeSet, TokenId,
};
use josekit::jwk::Jwk;
use josekit::jws::RS256;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};

use crate::memory::MemoryPolicies;
use crate::*;

struct World {
    clock: Arc<ManualClock>,
    audit: Arc<MemoryAuditLog>,
    accounts: Arc<MemoryAccountRepo>,
    account_service: AccountService,
    policies: PolicyService,
    account: AccountId,
    signer: Ed25519KeyPair,
}

fn world() -> World {
    world_with(PolicySettings::default())
}

fn world_with(settings: PolicySettings) -> World {
    let clock = Arc::new(ManualClock::starting_now());
    let audit = Arc::new(MemoryAuditLog::default());
    let accounts = Arc::new(MemoryAccountRepo::new(audit.clone()));
    let signing = Arc::new(MemorySigningKeys::new(audit.clone()));
    let repo = Arc::new(MemoryPolicies::new(signing.clone()));
    let keyring = Arc::new(Keyring::new(AesKey::new(&[3; 32]).unwrap(), vec![]));
    let jwks = Arc::new(Jwks::new(
        signing,
        keyring,
        clock.clone(),
        Arc::new(d2_kernel::blocking::Inline),
        Duration::hours(1),
        CacheSettings::default(),
    ));
    let account_service = AccountService::new(
        accounts.clone(),
        Arc::new(PlanCatalog::default()),
        Arc::new(SamplingPolicy::default()),
        clock.clone(),
        CacheSettings::default(),
    );
    let policies = PolicyService::new(
        repo.clone(),
        PublisherKeys::new(repo, account_service.clone(), clock.clone()),
        jwks,
        Arc::new(account_service.clone()),
        clock.clone(),
        settings,
    );
    let account = Account::new_trial(
        AccountId::random(),
        AccountName::parse("Acme").unwrap(),
        clock.now(),
        14,
    );
    let id = account.id;
    accounts.insert_account(account);
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    let signer = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    World {
        clock,
        audit,
        accounts,
        account_service,
        policies,
        account: id,
        signer,
    }
}

fn caller(account_id: AccountId, grants: &[Grant], app: Option<&str>) -> AuthContext {
    AuthContext {
        account_id,
        credential: Credential::ApiToken(TokenId::random()),
        user_id: None,
        acting_for: None,
        role: None,
        scopes: ScopeSet::new(grants.iter().copied()),
        app_name: app.map(AppName::normalise),
    }
}

fn policy(app: &str, tools: &[&str], deny: bool) -> Value {
    let mut permissions: Vec<Value> = tools.iter().map(|t| json!(t)).collect();
    if deny {
        permissions.push(json!({ "tool": tools[0], "allow": false }));
    }
    json!({
        "metadata": { "name": app, "description": "test" },
        "policies": [{ "role": "analyst", "permissions": permissions }]
    })
}

impl World {
    fn dev(&self) -> AuthContext {
        caller(self.account, &[Grant::Dev], None)
    }

    fn admin(&self) -> AuthContext {
        AuthContext {
            scopes: ScopeSet::all(),
            ..self.dev()
        }
    }

    async fn register(&self, ctx: &AuthContext) -> String {
        let public = STANDARD.encode(self.signer.public_key().as_ref());
        let (key, created) = self
            .policies
            .publisher_keys()
            .register(ctx, &public, None)
            .await
            .unwrap();
        assert!(created || key.revoked_at.is_none());
        key.key_id
    }

    async fn publish(
        &self,
        ctx: &AuthContext,
        body: &Value,
        if_match: Option<&str>,
        force: bool,
    ) -> Result<PolicyRecord, PolicyError> {
        let key_id = self.register(&self.dev()).await;
        let bytes = serde_json::to_vec(body).unwrap();
        let signature = STANDARD.encode(self.signer.sign(&bytes).as_ref());
        let request = PublishRequest {
            app_name: body["metadata"]["name"].as_str(),
            body: &bytes,
            key_id: Some(&key_id),
            signature: Some(&signature),
            if_match,
            version: None,
            force,
        };
        self.policies
            .publish(ctx, request)
            .await
            .map(|(record, _)| record)
    }
}

fn decode_part(part: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

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
async fn polls_resolve_the_app_answer_304_stop_at_the_ceiling_and_report_revocation() {
    let w = world_with(PolicySettings {
        poll_ceiling: PollCeiling {
            per_second: 1,
            burst: 14,
        },
        ..PolicySettings::default()
    });
    let published = w
        .publish(&w.dev(), &policy("billing", &["a"], false), None, false)
        .await
        .unwrap();
    let server = caller(w.account, &[Grant::Server], Some("billing"));

    let hint = w
        .policies
        .poll(&w.dev(), None, BundleStage::Auto, None)
        .await
        .unwrap_err();
    assert_eq!(hint.code(), Code::AppRequired);
    assert!(
        hint.to_string()
            .contains("app_name required for non-server tokens")
    );
    assert!(
        hint.to_string()
            .contains("server tokens have automatic app resolution")
    );

    let Poll::Bundle {
        record,
        poll_seconds,
        limit,
    } = w
        .policies
        .poll(&server, None, BundleStage::Auto, None)
        .await
        .unwrap()
    else {
        unreachable!("a bundle");
    };
    assert_eq!(record.jws, published.jws);
    assert_eq!(
        poll_seconds, 300,
        "the plan's interval is advice to the SDK"
    );
    assert_eq!((limit.limit, limit.remaining), (14, 13));
    let quoted = format!("W/\"{}\"", published.etag);
    for _ in 0..10 {
        let answer = w
            .policies
            .poll(&server, None, BundleStage::Auto, Some(&quoted))
            .await
            .unwrap();
        assert!(matches!(answer, Poll::NotModified { .. }));
    }
    // Full fetches back to back are fine until the ceiling, which 304s spend from too.
    for _ in 0..3 {
        w.policies
            .poll(&server, None, BundleStage::Auto, None)
            .await
            .unwrap();
    }
    let limited = w
        .policies
        .poll(&server, None, BundleStage::Auto, None)
        .await
        .unwrap_err();
    assert_eq!(limited.code(), Code::RateLimited);
    let limit = limited.rate_limit().unwrap();
    assert_eq!((limit.limit, limit.remaining), (14, 0));
    assert_eq!(limit.retry_after_seconds, 1);

    let admin = w.admin();
    w.policies.revoke(&admin, "billing").await.unwrap();
    let other_token = caller(w.account, &[Grant::Server], Some("billing"));
    let gone = w
        .policies
        .poll(&other_token, None, BundleStage::Auto, None)
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::PolicyRevoked);
    assert_eq!(
        w.policies
            .revoke(&admin, "billing")
            .await
            .unwrap_err()
            .code(),
        Code::PolicyNotFound
    );
    let dev_revoke = w.policies.revoke(&w.dev(), "billing").await.unwrap_err();
    assert_eq!(dev_revoke.code(), Code::InsufficientScope);
}

#[tokio::test]
async fn drafts_are_served_only_when_asked_or_nothing_is_published() {
    let w = world();
    let draft = w
        .policies
        .save_draft(&w.dev(), json!({ "bundle": policy("app", &["a"], false) }))
        .await
        .unwrap();
    assert_eq!(draft.stage, Stage::Draft);
    assert_eq!(draft.version, 1);
    let server = caller(w.account, &[Grant::Server], Some("app"));
    let Poll::Bundle { record, .. } = w
        .policies
        .poll(&server, None, BundleStage::Auto, None)
        .await
        .unwrap()
    else {
        unreachable!("the draft");
    };
    assert!(record.jws.is_none());
    let published = w
        .policies
        .poll(&server, None, BundleStage::Published, None)
        .await
        .unwrap_err();
    assert_eq!(published.code(), Code::PolicyNotFound);
    let live = w
        .publish(&w.dev(), &policy("app", &["a"], false), None, false)
        .await
        .unwrap();
    assert_eq!(live.version, 2, "versions count drafts too");
    assert!(
        w.policies
            .versions(&w.dev(), "app", &PageRequest::first(100))
            .await
            .unwrap()
            .items
            .iter()
            .all(|r| r.stage == Stage::Published),
        "the draft was consumed"
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
async fn rotation_resigns_every_active_bundle_with_hints_and_keeps_the_old_key_for_the_grace() {
    let w = world();
    let before = w
        .publish(&w.dev(), &policy("app", &["a"], false), None, false)
        .await
        .unwrap();
    let rotated = w.policies.rotate_signing_key(&w.admin()).await.unwrap();
    assert_eq!(rotated.previous_kid, before.kid);
    assert_eq!(rotated.resigned.len(), 1);
    let resigned = &rotated.resigned[0];
    assert_eq!(resigned.version, 2);
    let jws = resigned.jws.as_ref().unwrap();
    let header = decode_part(jws.split('.').next().unwrap());
    assert_eq!(header["kid"], rotated.new_key.kid.as_str());
    assert_eq!(header["jwks_refresh"], true);
    assert_eq!(header["new_kid"], rotated.new_key.kid.as_str());
    assert_eq!(header["rotation_id"], rotated.rotation_id.as_str());
    let set = w.policies.jwks().key_set(w.account).await.unwrap();
    let body = String::from_utf8(set.document.body.to_vec()).unwrap();
    assert!(body.contains(before.kid.as_deref().unwrap()) && body.contains(&rotated.new_key.kid));
    w.clock.advance(Duration::hours(2));
    let set = w.policies.jwks().key_set(w.account).await.unwrap();
    let body = String::from_utf8(set.document.body.to_vec()).unwrap();
    assert!(!body.contains(before.kid.as_deref().unwrap()));
    // A later publish carries no rotation hint.
    let later = w
        .publish(&w.dev(), &policy("app", &["a"], false), None, false)
        .await
        .unwrap();
    assert!(
        decode_part(later.jws.unwrap().split('.').next().unwrap())
            .get("jwks_refresh")
            .is_none()
    );
}

#[tokio::test]
async fn publisher_keys_are_idempotent_and_checked() {
    let w = world();
    let dev = w.dev();
    let public = STANDARD.encode(w.signer.public_key().as_ref());
    let (key, created) = w
        .policies
        .publisher_keys()
        .register(&dev, &public, None)
        .await
        .unwrap();
    assert!(created);
    let (again, created) = w
        .policies
        .publisher_keys()
        .register(&dev, &public, Some(&key.key_id))
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(again.key_id, key.key_id);
    let keys = w.policies.publisher_keys();
    assert_eq!(
        keys.register(&dev, &public, Some("ed_000000000000"))
            .await
            .unwrap_err()
            .code(),
        Code::KeyIdMismatch
    );
    assert_eq!(
        keys.register(&dev, "too short", None)
            .await
            .unwrap_err()
            .code(),
        Code::InvalidPublicKey
    );
    assert_eq!(
        keys.register(&dev, &STANDARD.encode([1u8; 31]), None)
            .await
            .unwrap_err()
            .code(),
        Code::InvalidPublicKey
    );
    let server = caller(w.account, &[Grant::Server], Some("x"));
    assert_eq!(
        keys.register(&server, &public, None)
            .await
            .unwrap_err()
            .code(),
        Code::InsufficientScope
    );
    keys.revoke(&dev, &key.key_id).await.unwrap();
    assert_eq!(
        keys.register(&dev, &public, None).await.unwrap_err().code(),
        Code::PublisherKeyRevoked
    );
    assert_eq!(
        keys.revoke(&dev, "ed_ffffffffffff")
            .await
            .unwrap_err()
            .code(),
        Code::PublisherKeyNotFound
    );
    assert_eq!(keys.list(&dev, false).await.unwrap().len(), 0);
    assert_eq!(keys.list(&dev, true).await.unwrap().len(), 1);
}

#[tokio::test]
async fn key_rotations_are_limited_per_account_but_not_for_the_operator() {
    let w = world_with(PolicySettings {
        max_rotations_per_hour: 2,
        ..PolicySettings::default()
    });
    let admin = w.admin();
    for _ in 0..2 {
        w.policies.rotate_signing_key(&admin).await.unwrap();
    }
    let refused = w.policies.rotate_signing_key(&admin).await.unwrap_err();
    assert!(matches!(refused, PolicyError::RotationRateLimited(_)));
    assert_eq!(refused.code(), d2_kernel::Code::RateLimited);
    let limit = refused.rate_limit().unwrap();
    assert_eq!((limit.limit, limit.remaining), (2, 0));
    assert!((1..=1800).contains(&limit.retry_after_seconds));

    let other = AuthContext {
        account_id: AccountId::random(),
        ..w.admin()
    };
    w.policies.rotate_signing_key(&other).await.unwrap();
    // The operator's rotation of every account is not an admin's request.
    w.policies
        .rotate_for(
            w.account,
            d2_audit::AuditEntry::system(
                w.account,
                d2_audit::AuditAction::JwksRotate,
                w.clock.now(),
            ),
        )
        .await
        .unwrap();
}

fn new_signer() -> Ed25519KeyPair {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
}

/// Registers `signer`'s key as `ctx`.
async fn register_key(w: &World, ctx: &AuthContext, signer: &Ed25519KeyPair) -> PublisherKey {
    let public = STANDARD.encode(signer.public_key().as_ref());
    let (key, created) = w
        .policies
        .publisher_keys()
        .register(ctx, &public, None)
        .await
        .unwrap();
    assert!(created);
    key
}

/// Publishes `body` signed by `signer` under `key_id`.
async fn publish_signed(
    w: &World,
    ctx: &AuthContext,
    signer: &Ed25519KeyPair,
    key_id: &str,
    body: &[u8],
) -> Result<PolicyRecord, PolicyError> {
    let signature = STANDARD.encode(signer.sign(body).as_ref());
    let request = PublishRequest {
        body,
        key_id: Some(key_id),
        signature: Some(&signature),
        if_match: Some("*"),
        ..PublishRequest::default()
    };
    w.policies
        .publish(ctx, request)
        .await
        .map(|(record, _)| record)
}

fn approval_required(required: bool) -> AccountPatch {
    AccountPatch {
        require_publisher_key_approval: Some(required),
        ..AccountPatch::default()
    }
}

#[tokio::test]
async fn with_approval_required_a_developers_key_waits_for_an_admin() {
    let w = world();
    let (dev, admin) = (w.dev(), w.admin());
    let body = serde_json::to_vec(&policy("app", &["a"], false)).unwrap();
    let before = new_signer();
    let early = register_key(&w, &dev, &before).await;
    assert_eq!(
        early.state(),
        KeyState::Active,
        "approval is off by default"
    );

    w.account_service
        .update(&admin, &approval_required(true))
        .await
        .unwrap();
    let signer = new_signer();
    let pending = register_key(&w, &dev, &signer).await;
    assert_eq!(pending.state(), KeyState::Pending);
    let upload = w
        .audit
        .all()
        .into_iter()
        .rfind(|r| r.entry.action == AuditAction::KeyUpload)
        .unwrap();
    assert_eq!(upload.entry.metadata["state"], "pending");
    let refused = publish_signed(&w, &dev, &signer, &pending.key_id, &body).await;
    assert_eq!(refused.unwrap_err().code(), Code::PublisherKeyPending);
    // Keys active before the setting was turned on stay active.
    publish_signed(&w, &dev, &before, &early.key_id, &body)
        .await
        .unwrap();
    // An admin's own key is active at once.
    let admins = register_key(&w, &admin, &new_signer()).await;
    assert_eq!(admins.state(), KeyState::Active);

    let keys = w.policies.publisher_keys();
    assert_eq!(
        keys.approve(&dev, &pending.key_id)
            .await
            .unwrap_err()
            .code(),
        Code::InsufficientScope
    );
    let stranger = AuthContext {
        account_id: AccountId::random(),
        ..w.admin()
    };
    assert_eq!(
        keys.approve(&stranger, &pending.key_id)
            .await
            .unwrap_err()
            .code(),
        Code::PublisherKeyNotFound
    );
    assert_eq!(
        keys.approve(&admin, "ed_ffffffffffff")
            .await
            .unwrap_err()
            .code(),
        Code::PublisherKeyNotFound
    );
    let approved = keys.approve(&admin, &pending.key_id).await.unwrap();
    assert_eq!(approved.state(), KeyState::Active);
    let approval = approved.approval.clone().unwrap();
    assert_eq!(approval.by, admin.actor());
    assert_eq!(approval.at, w.clock.now());
    let approvals = || {
        w.audit
            .all()
            .into_iter()
            .filter(|r| r.entry.action == AuditAction::KeyApprove)
            .collect::<Vec<_>>()
    };
    assert_eq!(approvals().len(), 1);
    assert_eq!(
        approvals()[0].entry.resource_id.as_deref(),
        Some(pending.key_id.as_str())
    );
    // Approving again changes nothing and records nothing.
    assert_eq!(
        keys.approve(&admin, &pending.key_id).await.unwrap(),
        approved
    );
    assert_eq!(approvals().len(), 1);
    let body = serde_json::to_vec(&policy("app", &["a", "b"], false)).unwrap();
    publish_signed(&w, &dev, &signer, &pending.key_id, &body)
        .await
        .unwrap();

    // A pending key can be revoked by its registrant, and is never approved after.
    let rejected = register_key(&w, &dev, &new_signer()).await;
    keys.revoke(&dev, &rejected.key_id).await.unwrap();
    assert_eq!(
        keys.approve(&admin, &rejected.key_id)
            .await
            .unwrap_err()
            .code(),
        Code::PublisherKeyRevoked
    );
}

#[tokio::test]
async fn only_the_registering_credential_or_an_admin_revokes_a_key() {
    let w = world();
    let user = Some(d2_kernel::UserId::random());
    // Two dev tokens minted by the same person are still two parties.
    let mine = AuthContext {
        user_id: user,
        ..w.dev()
    };
    let theirs = AuthContext {
        user_id: user,
        ..w.dev()
    };
    let keys = w.policies.publisher_keys();
    let key = register_key(&w, &mine, &new_signer()).await;
    let refused = keys.revoke(&theirs, &key.key_id).await.unwrap_err();
    assert_eq!(refused.code(), Code::KeyOwnerOrAdminRequired);
    assert!(refused.to_string().contains("admin"));
    assert!(
        w.audit
            .all()
            .iter()
            .all(|r| r.entry.action != AuditAction::KeyRevoke)
    );
    assert_eq!(
        keys.revoke(&theirs, "ed_ffffffffffff")
            .await
            .unwrap_err()
            .code(),
        Code::PublisherKeyNotFound
    );
    keys.revoke(&mine, &key.key_id).await.unwrap();

    let admins = register_key(&w, &w.admin(), &new_signer()).await;
    assert_eq!(
        keys.revoke(&mine, &admins.key_id).await.unwrap_err().code(),
        Code::KeyOwnerOrAdminRequired
    );
    let developers = register_key(&w, &theirs, &new_signer()).await;
    keys.revoke(&w.admin(), &developers.key_id).await.unwrap();
    keys.revoke(&w.admin(), &admins.key_id).await.unwrap();
    assert_eq!(keys.list(&mine, true).await.unwrap().len(), 3);
    assert!(keys.list(&mine, false).await.unwrap().is_empty());
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
