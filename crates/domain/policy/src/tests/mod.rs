//! Rules of the policy domain, against the in-memory ports, one module per use case:
//! publishing, polling, key rotation and publisher keys. The world and the helpers
//! they share are here.

mod keys;
mod poll;
mod publish;
mod rotation;

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
        d2_jwks::KeyAlgorithm::Rs256,
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
