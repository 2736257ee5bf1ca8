//! Rules of the agents domain, against the in-memory store.

use std::sync::Arc;

use chrono::Duration;
use d2_audit::AuditAction;
use d2_audit::memory::MemoryAuditLog;
use d2_kernel::{
    AccountId, AuthContext, Clock as _, Code, Credential, ErrorCode as _, Grant, ManualClock,
    PageRequest, Pepper, Scope, ScopeSet, TokenId,
};
use serde_json::json;

use crate::memory::MemoryAgents;
use crate::*;

struct World {
    repo: Arc<MemoryAgents>,
    clock: Arc<ManualClock>,
    audit: Arc<MemoryAuditLog>,
    agents: AgentService,
    clients: ClientAuthenticator,
    account: AccountId,
}

fn world() -> World {
    let clock = Arc::new(ManualClock::starting_now());
    let audit = Arc::new(MemoryAuditLog::default());
    let repo = Arc::new(MemoryAgents::new(audit.clone()));
    let pepper = Arc::new(Pepper::new(&[9; 32]).unwrap());
    let cache = Arc::new(AgentCache::new(
        repo.clone(),
        d2_kernel::CacheSettings::default(),
    ));
    World {
        agents: AgentService::new(
            repo.clone(),
            cache.clone(),
            pepper.clone(),
            clock.clone(),
            Duration::hours(1),
        ),
        clients: ClientAuthenticator::new(
            repo.clone(),
            cache,
            pepper,
            Arc::new(crate::memory::NamedSignatures),
            clock.clone(),
        ),
        repo,
        clock,
        audit,
        account: AccountId::random(),
    }
}

pub(crate) fn caller(account_id: AccountId, grants: &[Grant]) -> AuthContext {
    AuthContext {
        account_id,
        credential: Credential::ApiToken(TokenId::random()),
        user_id: None,
        acting_for: None,
        role: None,
        scopes: ScopeSet::new(grants.iter().copied()),
        app_name: None,
    }
}

pub(crate) fn admin(account_id: AccountId) -> AuthContext {
    caller(account_id, &[Grant::Scope(Scope::Admin)])
}

pub(crate) fn spec(name: &str) -> AgentSpec {
    AgentSpec {
        name: name.to_owned(),
        description: None,
        scopes: vec!["tools:read".into(), "reports.export".into()],
        redirect_uris: vec![],
        resources: vec![],
        attributes: serde_json::Map::new(),
        auth_method: AuthMethod::ClientSecretBasic,
        jwks: None,
        jwks_uri: None,
        access_token_seconds: AgentSpec::DEFAULT_ACCESS_SECONDS,
        refresh_token_seconds: Some(AgentSpec::DEFAULT_REFRESH_SECONDS),
    }
}

impl World {
    fn audited(&self, action: AuditAction) -> usize {
        self.audit
            .all()
            .iter()
            .filter(|r| r.entry.action == action)
            .count()
    }

    /// The metadata of the one record of `action`.
    fn record(&self, action: AuditAction) -> serde_json::Value {
        let records: Vec<_> = self
            .audit
            .all()
            .into_iter()
            .filter(|r| r.entry.action == action)
            .collect();
        assert_eq!(records.len(), 1, "one {action} record expected");
        records[0].entry.metadata.clone()
    }

    /// An active agent of the world's account and its secret.
    async fn active(&self, name: &str) -> (Agent, ClientSecret) {
        let (_, token) = self
            .agents
            .register(&admin(self.account), spec(name))
            .await
            .unwrap();
        self.agents.activate(token.expose()).await.unwrap()
    }
}

#[tokio::test]
async fn a_registered_agent_is_activated_once_and_then_authenticates_with_its_secret() {
    let w = world();
    let (pending, token) = w
        .agents
        .register(&admin(w.account), spec("  Billing agent "))
        .await
        .unwrap();
    assert_eq!(pending.state, AgentState::Pending);
    assert_eq!(pending.spec.name, "Billing agent");
    assert_eq!(pending.spec.scopes, ["reports.export", "tools:read"]);
    assert!(token.expose().starts_with("d2reg_"));
    // Pending: no secret yet, nothing authenticates.
    let refused = w
        .clients
        .authenticate_secret(
            &pending.client_id(),
            "d2cs_anything",
            AuthMethod::ClientSecretBasic,
        )
        .await
        .unwrap_err();
    assert!(matches!(
        refused,
        ClientAuthError::InvalidClient(ClientRefusal::NotActive)
    ));

    let (agent, secret) = w.agents.activate(token.expose()).await.unwrap();
    assert_eq!(agent.id, pending.id);
    assert_eq!(agent.state, AgentState::Active);
    assert_eq!(agent.activated_at, Some(w.clock.now()));
    assert!(secret.expose().starts_with("d2cs_"));
    assert_eq!(format!("{secret:?}"), "ClientSecret(d2cs_…redacted)");
    let authenticated = w
        .clients
        .authenticate_secret(
            &agent.client_id(),
            secret.expose(),
            AuthMethod::ClientSecretBasic,
        )
        .await
        .unwrap();
    assert_eq!(authenticated.id, agent.id);

    // Single use.
    let again = w.agents.activate(token.expose()).await.unwrap_err();
    assert_eq!(again.code(), Code::RegistrationNotFound);
    assert_eq!(w.audited(AuditAction::AgentRegister), 1);
    assert_eq!(w.audited(AuditAction::AgentActivate), 1);
    let registered = w.record(AuditAction::AgentRegister);
    assert_eq!(registered["name"], "Billing agent");
    assert_eq!(registered["state"], "pending");
    assert_eq!(
        registered["scopes"],
        json!(["reports.export", "tools:read"])
    );
    assert_eq!(registered["auth_method"], "client_secret_basic");
    // No secret reaches the audit log.
    let log = format!("{:?}", w.audit.all());
    assert!(!log.contains(token.expose()) && !log.contains(secret.expose()));
}

#[tokio::test]
async fn registration_tokens_expire_and_malformed_ones_get_the_same_answer() {
    let w = world();
    let (_, token) = w
        .agents
        .register(&admin(w.account), spec("Late"))
        .await
        .unwrap();
    w.clock
        .advance(Duration::hours(REGISTRATION_LIFETIME_HOURS));
    for text in [token.expose(), "d2reg_short", "", "d2cs_not_a_registration"] {
        let refused = w.agents.activate(text).await.unwrap_err();
        assert_eq!(refused.code(), Code::RegistrationNotFound, "{text}");
    }
    assert_eq!(w.audited(AuditAction::AgentActivate), 0);
}

#[tokio::test]
async fn every_refused_client_gets_invalid_client_whatever_the_reason() {
    let w = world();
    let (agent, secret) = w.active("Reporter").await;
    let (other, other_secret) = w.active("Other").await;
    let id = agent.client_id();
    let cases = [
        (
            AgentId::random().to_string(),
            secret.expose().to_owned(),
            AuthMethod::ClientSecretBasic,
            ClientRefusal::UnknownClient,
        ),
        (
            "not-a-client-id".to_owned(),
            secret.expose().to_owned(),
            AuthMethod::ClientSecretBasic,
            ClientRefusal::UnknownClient,
        ),
        (
            id.clone(),
            other_secret.expose().to_owned(),
            AuthMethod::ClientSecretBasic,
            ClientRefusal::WrongSecret,
        ),
        (
            id.clone(),
            "d2cs_guess".to_owned(),
            AuthMethod::ClientSecretBasic,
            ClientRefusal::WrongSecret,
        ),
        (
            id.clone(),
            String::new(),
            AuthMethod::ClientSecretBasic,
            ClientRefusal::WrongSecret,
        ),
        (
            id.clone(),
            secret.expose().to_owned(),
            AuthMethod::ClientSecretPost,
            ClientRefusal::WrongMethod,
        ),
    ];
    for (client_id, presented, method, reason) in cases {
        let refused = w
            .clients
            .authenticate_secret(&client_id, &presented, method)
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidClient);
        assert!(
            matches!(refused, ClientAuthError::InvalidClient(r) if r == reason),
            "{client_id}: {refused:?}"
        );
    }

    // Disabled: refused until turned on again.
    let ctx = admin(w.account);
    w.agents
        .update(
            &ctx,
            other.id,
            other.spec.clone(),
            Some(AgentState::Disabled),
        )
        .await
        .unwrap();
    let refused = w
        .clients
        .authenticate_secret(
            &other.client_id(),
            other_secret.expose(),
            AuthMethod::ClientSecretBasic,
        )
        .await
        .unwrap_err();
    assert!(matches!(
        refused,
        ClientAuthError::InvalidClient(ClientRefusal::NotActive)
    ));
    w.agents
        .update(&ctx, other.id, other.spec.clone(), Some(AgentState::Active))
        .await
        .unwrap();
    w.clients
        .authenticate_secret(
            &other.client_id(),
            other_secret.expose(),
            AuthMethod::ClientSecretBasic,
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_rotated_secret_overlaps_with_the_old_one_for_the_grace_only() {
    let w = world();
    let (agent, old) = w.active("Rotating").await;
    let ctx = admin(w.account);
    let rotated = w.agents.rotate_secret(&ctx, agent.id).await.unwrap();
    assert_eq!(
        rotated.previous_valid_until,
        w.clock.now() + Duration::hours(1)
    );
    assert_ne!(rotated.secret.expose(), old.expose());
    let id = agent.client_id();
    for secret in [&old, &rotated.secret] {
        w.clients
            .authenticate_secret(&id, secret.expose(), AuthMethod::ClientSecretBasic)
            .await
            .unwrap();
    }
    w.clock.advance(Duration::hours(1));
    let refused = w
        .clients
        .authenticate_secret(&id, old.expose(), AuthMethod::ClientSecretBasic)
        .await
        .unwrap_err();
    assert!(matches!(
        refused,
        ClientAuthError::InvalidClient(ClientRefusal::WrongSecret)
    ));
    w.clients
        .authenticate_secret(&id, rotated.secret.expose(), AuthMethod::ClientSecretBasic)
        .await
        .unwrap();
    assert_eq!(w.audited(AuditAction::AgentSecretRotate), 1);
    let record = w.record(AuditAction::AgentSecretRotate);
    assert_eq!(record["name"], "Rotating");
    assert_eq!(
        record["previous_valid_until"],
        json!(rotated.previous_valid_until)
    );

    // Only an active agent rotates.
    let (pending, _) = w.agents.register(&ctx, spec("Pending")).await.unwrap();
    let refused = w.agents.rotate_secret(&ctx, pending.id).await.unwrap_err();
    assert_eq!(refused.code(), Code::AgentNotActive);
    assert_eq!(w.audited(AuditAction::AgentSecretRotate), 1);
}

#[tokio::test]
async fn another_account_sees_nothing_and_changes_nothing() {
    let w = world();
    let (agent, secret) = w.active("Private").await;
    let stranger = admin(AccountId::random());
    assert_eq!(
        w.agents.get(&stranger, agent.id).await.unwrap_err().code(),
        Code::AgentNotFound
    );
    assert!(
        w.agents
            .list(&stranger, &PageRequest::first(100))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let refusals = [
        w.agents
            .update(&stranger, agent.id, spec("Taken"), None)
            .await
            .unwrap_err(),
        w.agents.delete(&stranger, agent.id).await.unwrap_err(),
        w.agents
            .rotate_secret(&stranger, agent.id)
            .await
            .unwrap_err(),
    ];
    for refused in refusals {
        assert_eq!(refused.code(), Code::AgentNotFound);
    }
    // Unchanged: the same agent, the same secret.
    assert_eq!(
        w.agents.get(&admin(w.account), agent.id).await.unwrap(),
        agent
    );
    w.clients
        .authenticate_secret(
            &agent.client_id(),
            secret.expose(),
            AuthMethod::ClientSecretBasic,
        )
        .await
        .unwrap();
    assert_eq!(w.audited(AuditAction::AgentUpdate), 0);
    assert_eq!(w.audited(AuditAction::AgentDelete), 0);
}

#[tokio::test]
async fn only_admins_manage_agents() {
    let w = world();
    let developer = caller(
        w.account,
        &[
            Grant::Scope(Scope::PolicyPublish),
            Grant::Scope(Scope::KeyUpload),
        ],
    );
    let refused = w
        .agents
        .register(&developer, spec("Nope"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InsufficientScope);
    assert!(w.audit.all().is_empty());
    let (agent, _) = w.active("Managed").await;
    assert_eq!(
        w.agents.get(&developer, agent.id).await.unwrap_err().code(),
        Code::InsufficientScope
    );
}

#[tokio::test]
async fn deleted_agents_authenticate_no_more_and_lists_go_newest_first() {
    let w = world();
    let ctx = admin(w.account);
    let mut made = Vec::new();
    for i in 0..3 {
        made.push(w.active(&format!("Agent {i}")).await);
        w.clock.advance(Duration::seconds(1));
    }
    let first = w.agents.list(&ctx, &PageRequest::first(2)).await.unwrap();
    let names: Vec<&str> = first.items.iter().map(|a| a.spec.name.as_str()).collect();
    assert_eq!(names, ["Agent 2", "Agent 1"]);
    let cursor = first.next.unwrap().encode();
    let rest = w
        .agents
        .list(&ctx, &PageRequest::parse(Some(2), Some(&cursor)).unwrap())
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 1);
    assert_eq!(rest.items[0].spec.name, "Agent 0");
    assert!(rest.next.is_none());

    let (agent, secret) = &made[0];
    w.agents.delete(&ctx, agent.id).await.unwrap();
    let refused = w
        .clients
        .authenticate_secret(
            &agent.client_id(),
            secret.expose(),
            AuthMethod::ClientSecretBasic,
        )
        .await
        .unwrap_err();
    assert!(matches!(
        refused,
        ClientAuthError::InvalidClient(ClientRefusal::UnknownClient)
    ));
    assert_eq!(
        w.agents.delete(&ctx, agent.id).await.unwrap_err().code(),
        Code::AgentNotFound
    );
    assert_eq!(w.audited(AuditAction::AgentDelete), 1);
}

#[tokio::test]
async fn an_update_cannot_make_an_agent_pending_again() {
    let w = world();
    let (agent, _) = w.active("Steady").await;
    let refused = w
        .agents
        .update(
            &admin(w.account),
            agent.id,
            spec("Steady"),
            Some(AgentState::Pending),
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidAgent);
    assert_eq!(w.audited(AuditAction::AgentUpdate), 0);
}

#[test]
fn specs_that_break_a_rule_are_refused_with_the_rule() {
    let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "x": "x", "y": "y"}]});
    let private =
        json!({"keys": [{"kty": "EC", "crv": "P-256", "x": "x", "y": "y", "d": "secret"}]});
    let cases: Vec<(&str, AgentSpec)> = vec![
        (
            "empty name",
            AgentSpec {
                name: "   ".into(),
                ..spec("x")
            },
        ),
        (
            "long name",
            AgentSpec {
                name: "n".repeat(101),
                ..spec("x")
            },
        ),
        (
            "control character",
            AgentSpec {
                name: "a\u{0}b".into(),
                ..spec("x")
            },
        ),
        (
            "scope with a space",
            AgentSpec {
                scopes: vec!["read write".into()],
                ..spec("x")
            },
        ),
        (
            "scope with a quote",
            AgentSpec {
                scopes: vec!["say\"hi".into()],
                ..spec("x")
            },
        ),
        (
            "empty scope",
            AgentSpec {
                scopes: vec![String::new()],
                ..spec("x")
            },
        ),
        (
            "too many scopes",
            AgentSpec {
                scopes: (0..101).map(|i| format!("s{i}")).collect(),
                ..spec("x")
            },
        ),
        (
            "http redirect",
            AgentSpec {
                redirect_uris: vec!["http://agent.example/cb".into()],
                ..spec("x")
            },
        ),
        (
            "relative redirect",
            AgentSpec {
                redirect_uris: vec!["/cb".into()],
                ..spec("x")
            },
        ),
        (
            "fragment",
            AgentSpec {
                redirect_uris: vec!["https://agent.example/cb#x".into()],
                ..spec("x")
            },
        ),
        (
            "custom scheme",
            AgentSpec {
                redirect_uris: vec!["javascript:alert(1)".into()],
                ..spec("x")
            },
        ),
        (
            "resource with a fragment",
            AgentSpec {
                resources: vec!["https://api.example/#x".into()],
                ..spec("x")
            },
        ),
        (
            "relative resource",
            AgentSpec {
                resources: vec!["api.example".into()],
                ..spec("x")
            },
        ),
        (
            "attribute key too long",
            AgentSpec {
                attributes: [("k".repeat(65), json!(1))].into_iter().collect(),
                ..spec("x")
            },
        ),
        (
            "short access",
            AgentSpec {
                access_token_seconds: 59,
                ..spec("x")
            },
        ),
        (
            "long access",
            AgentSpec {
                access_token_seconds: 86_401,
                ..spec("x")
            },
        ),
        (
            "short refresh",
            AgentSpec {
                refresh_token_seconds: Some(60),
                ..spec("x")
            },
        ),
        (
            "keys without private_key_jwt",
            AgentSpec {
                jwks: Some(jwks.clone()),
                ..spec("x")
            },
        ),
        (
            "private_key_jwt without keys",
            AgentSpec {
                auth_method: AuthMethod::PrivateKeyJwt,
                ..spec("x")
            },
        ),
        (
            "both jwks and jwks_uri",
            AgentSpec {
                auth_method: AuthMethod::PrivateKeyJwt,
                jwks: Some(jwks.clone()),
                jwks_uri: Some("https://agent.example/jwks".into()),
                ..spec("x")
            },
        ),
        (
            "http jwks_uri",
            AgentSpec {
                auth_method: AuthMethod::PrivateKeyJwt,
                jwks_uri: Some("http://agent.example/jwks".into()),
                ..spec("x")
            },
        ),
        (
            "empty jwks",
            AgentSpec {
                auth_method: AuthMethod::PrivateKeyJwt,
                jwks: Some(json!({"keys": []})),
                ..spec("x")
            },
        ),
        (
            "not a jwks",
            AgentSpec {
                auth_method: AuthMethod::PrivateKeyJwt,
                jwks: Some(json!([1])),
                ..spec("x")
            },
        ),
        (
            "private key",
            AgentSpec {
                auth_method: AuthMethod::PrivateKeyJwt,
                jwks: Some(private),
                ..spec("x")
            },
        ),
    ];
    for (case, spec) in cases {
        let refused = spec.validate().unwrap_err();
        assert_eq!(refused.code(), Code::InvalidAgent, "{case}");
    }

    let good = AgentSpec {
        scopes: vec!["b".into(), "a".into(), "b".into()],
        redirect_uris: vec![
            "https://agent.example/cb".into(),
            "http://127.0.0.1:8123/cb".into(),
            "http://[::1]/cb".into(),
        ],
        refresh_token_seconds: None,
        ..spec("Fine")
    }
    .validate()
    .unwrap();
    assert_eq!(good.scopes, ["a", "b"]);
    assert_eq!(good.redirect_uris.len(), 3);
    AgentSpec {
        auth_method: AuthMethod::PrivateKeyJwt,
        jwks: Some(jwks),
        ..spec("Keys")
    }
    .validate()
    .unwrap();
    AgentSpec {
        auth_method: AuthMethod::PrivateKeyJwt,
        jwks_uri: Some("https://agent.example/jwks".into()),
        ..spec("Remote keys")
    }
    .validate()
    .unwrap();
}

#[tokio::test]
async fn a_private_key_jwt_agent_authenticates_with_each_assertion_once() {
    use base64::Engine as _;
    let w = world();
    let keyed = AgentSpec {
        auth_method: AuthMethod::PrivateKeyJwt,
        jwks: Some(json!({"keys": [{"kty": "EC", "crv": "P-256", "x": "x", "y": "y"}]})),
        ..spec("Keyed")
    };
    let (_, token) = w.agents.register(&admin(w.account), keyed).await.unwrap();
    let (agent, keyed_secret) = w.agents.activate(token.expose()).await.unwrap();
    let (secret_agent, _) = w.active("Secret").await;
    let id = agent.client_id();
    let audiences = vec![format!("https://d2.example/oauth/{}/token", w.account)];
    let assertion = |client: &str, jti: &str, signer: &str| {
        let claims = json!({
            "iss": client, "sub": client, "aud": audiences[0],
            "exp": w.clock.now().timestamp().saturating_add(60), "jti": jti,
        });
        format!(
            "e30.{}.signed-by-{signer}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    };
    let refusal = |result: Result<Arc<Agent>, ClientAuthError>| match result {
        Err(ClientAuthError::InvalidClient(reason)) => reason,
        other => unreachable!("a refusal was expected: {other:?}"),
    };

    let first = assertion(&id, "one", &id);
    let authenticated = w
        .clients
        .authenticate_assertion(Some(&id), &first, &audiences)
        .await
        .unwrap();
    assert_eq!(authenticated.id, agent.id);
    let replayed = w
        .clients
        .authenticate_assertion(None, &first, &audiences)
        .await;
    assert_eq!(refusal(replayed), ClientRefusal::AssertionReplayed);
    // Another jti works; the same jti of another agent is that agent's own.
    w.clients
        .authenticate_assertion(None, &assertion(&id, "two", &id), &audiences)
        .await
        .unwrap();

    let secret_id = secret_agent.client_id();
    let cases = [
        (
            "signed by another agent's key",
            assertion(&id, "three", &secret_id),
            Some(id.clone()),
            ClientRefusal::Assertion("bad signature"),
        ),
        (
            "client_id not the sub",
            assertion(&id, "four", &id),
            Some(secret_id.clone()),
            ClientRefusal::Assertion("client_id differs from the assertion's sub"),
        ),
        (
            "an agent with a secret",
            assertion(&secret_id, "five", &secret_id),
            None,
            ClientRefusal::WrongMethod,
        ),
        (
            "an unknown agent",
            assertion(&AgentId::random().to_string(), "six", &id),
            None,
            ClientRefusal::UnknownClient,
        ),
        (
            "not a JWT",
            "garbage".to_owned(),
            None,
            ClientRefusal::Assertion("malformed assertion"),
        ),
    ];
    for (case, presented, client_id, expected) in cases {
        let result = w
            .clients
            .authenticate_assertion(client_id.as_deref(), &presented, &audiences)
            .await;
        assert_eq!(refusal(result), expected, "{case}");
    }
    // The secret its activation showed never authenticates a private_key_jwt agent.
    let refused = w
        .clients
        .authenticate_secret_any_way(&id, keyed_secret.expose())
        .await;
    assert_eq!(refusal(refused), ClientRefusal::WrongMethod);
    w.agents
        .update(
            &admin(w.account),
            agent.id,
            agent.spec.clone(),
            Some(AgentState::Disabled),
        )
        .await
        .unwrap();
    let disabled = w
        .clients
        .authenticate_assertion(None, &assertion(&id, "seven", &id), &audiences)
        .await;
    assert_eq!(refusal(disabled), ClientRefusal::NotActive);
}

#[tokio::test]
async fn a_replicas_cached_agents_follow_the_change_feed_and_a_refusal_reads_again() {
    use d2_kernel::ChangeSubscriber as _;
    let w = world();
    let (agent, secret) = w.active("Cached").await;
    let id = agent.client_id();
    // Another replica: its own cache over the same store.
    let replica_cache = Arc::new(AgentCache::new(
        w.repo.clone(),
        d2_kernel::CacheSettings::default(),
    ));
    let replica = ClientAuthenticator::new(
        w.repo.clone(),
        replica_cache.clone(),
        Arc::new(Pepper::new(&[9; 32]).unwrap()),
        Arc::new(crate::memory::NamedSignatures),
        w.clock.clone(),
    );
    let basic = AuthMethod::ClientSecretBasic;
    replica
        .authenticate_secret(&id, secret.expose(), basic)
        .await
        .unwrap();

    // Disabled here: the replica's cached agent still authenticates until the change feed
    // reaches it, then no more.
    let ctx = admin(w.account);
    w.agents
        .update(
            &ctx,
            agent.id,
            agent.spec.clone(),
            Some(AgentState::Disabled),
        )
        .await
        .unwrap();
    assert!(
        replica
            .authenticate_secret(&id, secret.expose(), basic)
            .await
            .is_ok(),
        "cached until the change arrives"
    );
    replica_cache.on_change(&d2_kernel::Change::OAuth(w.account));
    let refused = replica
        .authenticate_secret(&id, secret.expose(), basic)
        .await
        .unwrap_err();
    assert!(matches!(
        refused,
        ClientAuthError::InvalidClient(ClientRefusal::NotActive)
    ));

    // Enabled and rotated here: the replica's cache still holds the disabled agent and the
    // old secret, but a refusal reads again, so both work at once, before any change.
    w.agents
        .update(&ctx, agent.id, agent.spec.clone(), Some(AgentState::Active))
        .await
        .unwrap();
    let rotated = w.agents.rotate_secret(&ctx, agent.id).await.unwrap();
    replica
        .authenticate_secret(&id, rotated.secret.expose(), basic)
        .await
        .unwrap();
    replica
        .authenticate_secret(&id, secret.expose(), basic)
        .await
        .unwrap();
}
