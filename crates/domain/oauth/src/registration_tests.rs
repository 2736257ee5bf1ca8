//! Dynamic client registration: off until the account's policy turns it on, the initial
//! access token required, metadata checked into an agent within the policy, clients
//! without a shared secret found again, and unused registrations reaped.

use std::sync::Arc;

use d2_audit::AuditAction;
use d2_audit::memory::MemoryAuditLog;
use d2_kernel::{AccountId, Code, ErrorCode as _, ManualClock, Pepper};
use serde_json::json;

use crate::memory::MemoryAgents;
use crate::tests::admin;
use crate::*;

struct World {
    clock: Arc<ManualClock>,
    audit: Arc<MemoryAuditLog>,
    policies: Arc<ClientPolicies>,
    clients: DynamicClients,
    authenticator: ClientAuthenticator,
    account: AccountId,
}

fn world() -> World {
    let clock = Arc::new(ManualClock::starting_now());
    let audit = Arc::new(MemoryAuditLog::default());
    let repo = Arc::new(MemoryAgents::new(audit.clone()));
    let cache = Arc::new(AgentCache::new(
        repo.clone(),
        d2_kernel::CacheSettings::default(),
    ));
    let policies = Arc::new(ClientPolicies::new(
        repo.clone(),
        clock.clone(),
        d2_kernel::CacheSettings::default(),
    ));
    let pepper = Arc::new(Pepper::new(&[9; 32]).unwrap());
    World {
        clients: DynamicClients::new(
            repo.clone(),
            repo.clone(),
            policies.clone(),
            cache.clone(),
            pepper.clone(),
            clock.clone(),
        ),
        authenticator: ClientAuthenticator::new(
            repo,
            cache,
            pepper,
            Arc::new(crate::memory::NamedSignatures),
            clock.clone(),
        ),
        clock,
        audit,
        policies,
        account: AccountId::random(),
    }
}

/// Turns registration on and answers the initial access token.
async fn open(world: &World) -> String {
    let ctx = admin(world.account);
    world
        .policies
        .set(
            &ctx,
            ClientPolicy {
                metadata_documents: false,
                dynamic_registration: true,
                initial_access: None,
                scopes: vec!["tools:read".into(), "offline_access".into()],
                resources: vec!["https://mcp.example/mcp".into()],
                updated_at: None,
            },
        )
        .await
        .unwrap();
    let token = world.clients.issue_initial_access(&ctx).await.unwrap();
    token.expose().to_owned()
}

fn public_client() -> ClientMetadata {
    ClientMetadata {
        redirect_uris: vec!["http://127.0.0.1:3000/callback".into()],
        token_endpoint_auth_method: Some("none".into()),
        grant_types: Some(vec!["authorization_code".into(), "refresh_token".into()]),
        response_types: Some(vec!["code".into()]),
        client_name: Some("Desktop MCP client".into()),
        scope: Some("tools:read admin".into()),
        ..ClientMetadata::default()
    }
}

#[tokio::test]
async fn registration_is_off_until_the_policy_turns_it_on_and_needs_the_token() {
    let world = world();
    let refused = world
        .clients
        .register(world.account, Some("d2iat_guess"), public_client())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::RegistrationDisabled);
    let anonymous = world
        .clients
        .register(world.account, None, public_client())
        .await
        .unwrap_err();
    assert_eq!(
        anonymous.code(),
        Code::InvalidToken,
        "a credential is asked first"
    );
    let token = open(&world).await;
    for bearer in [None, Some("d2iat_wrong"), Some("not a token")] {
        let refused = world
            .clients
            .register(world.account, bearer, public_client())
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidToken, "{bearer:?}");
    }
    // Another account's token is not this one's.
    let other = World {
        account: AccountId::random(),
        ..world
    };
    let refused = other
        .clients
        .register(other.account, Some(&token), public_client())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::RegistrationDisabled);
    // A new token replaces the old.
    let newer = open(&other).await;
    let refused = other
        .clients
        .register(other.account, Some(&token), public_client())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidToken);
    other
        .clients
        .register(other.account, Some(&newer), public_client())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_client_registers_within_the_policy_and_a_public_one_is_found_again() {
    let world = world();
    let token = open(&world).await;
    let first = world
        .clients
        .register(world.account, Some(&token), public_client())
        .await
        .unwrap();
    assert!(first.secret.is_none(), "a public client gets no secret");
    let agent = &first.agent;
    assert!(agent.registered_dynamically);
    assert_eq!(agent.state, AgentState::Active);
    assert_eq!(agent.spec.auth_method, AuthMethod::None);
    assert_eq!(agent.spec.scopes, ["tools:read"], "asked, of the policy's");
    assert_eq!(agent.spec.resources, ["https://mcp.example/mcp"]);
    assert_eq!(first.grant_types, ["authorization_code", "refresh_token"]);
    let again = world
        .clients
        .register(world.account, Some(&token), public_client())
        .await
        .unwrap();
    assert_eq!(
        again.agent.id, agent.id,
        "the same metadata, the same client"
    );
    let registered = world
        .audit
        .all()
        .into_iter()
        .filter(|r| r.entry.action == AuditAction::AgentRegister)
        .count();
    assert_eq!(registered, 1);
    world
        .authenticator
        .authenticate_public(world.account, &agent.client_id())
        .await
        .unwrap();

    // A confidential client gets a secret, and a new registration each time.
    let confidential = ClientMetadata {
        token_endpoint_auth_method: None,
        grant_types: Some(vec!["client_credentials".into()]),
        redirect_uris: vec![],
        ..public_client()
    };
    let with_secret = world
        .clients
        .register(world.account, Some(&token), confidential.clone())
        .await
        .unwrap();
    assert_eq!(
        with_secret.agent.spec.auth_method,
        AuthMethod::ClientSecretBasic
    );
    let secret = with_secret.secret.expect("a secret, shown once");
    world
        .authenticator
        .authenticate_secret(
            &with_secret.agent.client_id(),
            secret.expose(),
            AuthMethod::ClientSecretBasic,
        )
        .await
        .unwrap();
    let second = world
        .clients
        .register(world.account, Some(&token), confidential)
        .await
        .unwrap();
    assert_ne!(second.agent.id, with_secret.agent.id);
}

#[tokio::test]
async fn bad_metadata_is_refused_with_its_rfc_7591_error() {
    let world = world();
    let token = open(&world).await;
    let cases = [
        (
            ClientMetadata {
                redirect_uris: vec![],
                ..public_client()
            },
            Code::InvalidRedirectUri,
        ),
        (
            ClientMetadata {
                redirect_uris: vec!["http://evil.example/cb".into()],
                ..public_client()
            },
            Code::InvalidRedirectUri,
        ),
        (
            ClientMetadata {
                token_endpoint_auth_method: Some("tls_client_auth".into()),
                ..public_client()
            },
            Code::InvalidClientMetadata,
        ),
        (
            ClientMetadata {
                grant_types: Some(vec!["client_credentials".into()]),
                ..public_client()
            },
            Code::InvalidClientMetadata,
        ),
        (
            ClientMetadata {
                grant_types: Some(vec!["password".into()]),
                ..public_client()
            },
            Code::InvalidClientMetadata,
        ),
        (
            ClientMetadata {
                response_types: Some(vec!["token".into()]),
                ..public_client()
            },
            Code::InvalidClientMetadata,
        ),
        (
            ClientMetadata {
                jwks: Some(json!({"keys": [{"kty": "EC"}]})),
                ..public_client()
            },
            Code::InvalidClientMetadata,
        ),
        (
            ClientMetadata {
                token_endpoint_auth_method: Some("private_key_jwt".into()),
                ..public_client()
            },
            Code::InvalidClientMetadata,
        ),
        (
            ClientMetadata {
                client_name: Some("x".repeat(101)),
                ..public_client()
            },
            Code::InvalidClientMetadata,
        ),
    ];
    for (metadata, code) in cases {
        let why = format!("{metadata:?}");
        let refused = world
            .clients
            .register(world.account, Some(&token), metadata)
            .await
            .unwrap_err();
        assert_eq!(refused.code(), code, "{why}: {refused}");
    }
    assert!(
        world
            .audit
            .all()
            .iter()
            .all(|r| r.entry.action != AuditAction::AgentRegister),
        "nothing registered"
    );
}

#[tokio::test]
async fn unused_registrations_are_reaped_after_a_day() {
    let world = world();
    let token = open(&world).await;
    let registered = world
        .clients
        .register(world.account, Some(&token), public_client())
        .await
        .unwrap();
    assert_eq!(
        world.clients.reap_unused(100).await.unwrap(),
        0,
        "too young"
    );
    world.clock.advance(chrono::Duration::hours(25));
    assert_eq!(world.clients.reap_unused(100).await.unwrap(), 1);
    let reaped = world
        .audit
        .all()
        .into_iter()
        .find(|r| r.entry.action == AuditAction::AgentDelete)
        .expect("audited");
    assert_eq!(reaped.entry.metadata["reason"], "unused");
    assert!(
        world
            .authenticator
            .authenticate_public(world.account, &registered.agent.client_id())
            .await
            .is_err(),
        "gone"
    );
}
