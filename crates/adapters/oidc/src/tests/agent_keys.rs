//! Agents' keys for `private_key_jwt`: an inline set, and a `jwks_uri` served by `wiremock`,
//! fetched once, refetched for an unknown kid at most every thirty seconds.

use chrono::Duration;
use d2_kernel::AccountId;
use d2_oauth::{Agent, AgentSpec, AssertionVerifier as _, AuthMethod};
use serde_json::{Value, json};

use super::support::{FakeIdp, Mode, TestKey, clock, jwks};
use crate::{AgentKeys, OutboundFetch, Reach};

fn agent(jwks: Option<Value>, jwks_uri: Option<String>) -> Agent {
    let spec = AgentSpec {
        name: "Signer".into(),
        description: None,
        scopes: vec![],
        redirect_uris: vec![],
        resources: vec![],
        attributes: serde_json::Map::new(),
        auth_method: AuthMethod::PrivateKeyJwt,
        jwks,
        jwks_uri,
        access_token_seconds: AgentSpec::DEFAULT_ACCESS_SECONDS,
        refresh_token_seconds: None,
    };
    Agent::new(AccountId::random(), spec, None, chrono::Utc::now())
}

fn assertion(key: &TestKey, jti: &str) -> String {
    key.sign(&json!({"iss": "a", "sub": "a", "jti": jti}))
}

#[tokio::test]
async fn inline_keys_verify_until_the_agent_registers_others() {
    let clock = clock();
    let keys =
        AgentKeys::new(clock.clone(), OutboundFetch::new(Reach::Any, None).unwrap()).unwrap();
    let (first, second) = (TestKey::rsa("k1"), TestKey::ec("k2"));
    let mut signer = agent(Some(jwks(&[&first])), None);
    let claims = keys
        .verified_claims(&signer, &assertion(&first, "1"))
        .await
        .unwrap();
    assert_eq!(claims["jti"], "1");
    assert_eq!(
        keys.verified_claims(&signer, &assertion(&second, "2"))
            .await,
        Err("unknown signing key")
    );
    signer.spec.jwks = Some(jwks(&[&second]));
    keys.verified_claims(&signer, &assertion(&second, "3"))
        .await
        .unwrap();
    assert_eq!(
        keys.verified_claims(&signer, &assertion(&first, "4")).await,
        Err("unknown signing key"),
        "the replaced key no longer verifies"
    );
    // Another key under the registered kid, a tampered payload, no signature at all.
    let impostor = TestKey::ec("k2");
    assert_eq!(
        keys.verified_claims(&signer, &assertion(&impostor, "5"))
            .await,
        Err("bad signature")
    );
    let signed = assertion(&second, "6");
    let mut parts: Vec<&str> = signed.split('.').collect();
    let other_payload = super::support::encode_json(&json!({"sub": "b"}));
    parts[1] = &other_payload;
    assert_eq!(
        keys.verified_claims(&signer, &parts.join(".")).await,
        Err("bad signature")
    );
    let unsigned = format!(
        "{}.{}.",
        super::support::encode_json(&json!({"alg": "none"})),
        other_payload
    );
    assert!(keys.verified_claims(&signer, &unsigned).await.is_err());
}

#[tokio::test]
async fn a_jwks_uri_is_fetched_once_and_again_for_a_new_kid_at_most_every_thirty_seconds() {
    let clock = clock();
    let keys =
        AgentKeys::new(clock.clone(), OutboundFetch::new(Reach::Any, None).unwrap()).unwrap();
    let (first, rotated) = (TestKey::rsa("k1"), TestKey::rsa("k2"));
    let served = FakeIdp::start(&[&first]).await;
    let signer = agent(None, Some(format!("{}/jwks", served.issuer())));
    for jti in ["1", "2", "3"] {
        keys.verified_claims(&signer, &assertion(&first, jti))
            .await
            .unwrap();
    }
    assert_eq!(served.jwks_requests().await, 1, "fetched once");

    served.publish(&[&first, &rotated]);
    assert_eq!(
        keys.verified_claims(&signer, &assertion(&rotated, "4"))
            .await,
        Err("unknown signing key"),
        "no refetch within thirty seconds of the last"
    );
    assert_eq!(served.jwks_requests().await, 1);
    clock.advance(Duration::seconds(31));
    keys.verified_claims(&signer, &assertion(&rotated, "5"))
        .await
        .unwrap();
    assert_eq!(served.jwks_requests().await, 2, "refetched for the new kid");
}

#[tokio::test]
async fn a_jwks_uri_that_cannot_be_read_verifies_nothing_and_is_fetched_again_after_a_pause() {
    let clock = clock();
    let keys =
        AgentKeys::new(clock.clone(), OutboundFetch::new(Reach::Any, None).unwrap()).unwrap();
    let key = TestKey::rsa("k1");
    let served = FakeIdp::start(&[&key]).await;
    let signer = agent(None, Some(format!("{}/jwks", served.issuer())));
    let refused = Err("the agent's jwks_uri could not be fetched");
    served.set_mode(Mode::Down);
    for jti in ["1", "2", "3"] {
        assert_eq!(
            keys.verified_claims(&signer, &assertion(&key, jti)).await,
            refused
        );
    }
    assert_eq!(served.jwks_requests().await, 1, "a failure is remembered");
    // Thirty seconds on, the set is fetched again; an answer that is no key set fails too.
    served.set_mode(Mode::Garbage);
    clock.advance(Duration::seconds(31));
    assert_eq!(
        keys.verified_claims(&signer, &assertion(&key, "4")).await,
        refused
    );
    assert_eq!(served.jwks_requests().await, 2);
    // Once the set is served, the next fetch after the pause verifies.
    served.set_mode(Mode::Up);
    assert_eq!(
        keys.verified_claims(&signer, &assertion(&key, "5")).await,
        refused
    );
    clock.advance(Duration::seconds(31));
    keys.verified_claims(&signer, &assertion(&key, "6"))
        .await
        .unwrap();
    assert_eq!(served.jwks_requests().await, 3);
}

#[tokio::test]
async fn a_jwks_uri_inside_the_servers_network_is_never_fetched() {
    let keys = AgentKeys::new(clock(), OutboundFetch::public()).unwrap();
    let key = TestKey::rsa("k1");
    let served = FakeIdp::start(&[&key]).await;
    let port = served
        .issuer()
        .rsplit(':')
        .next()
        .unwrap()
        .parse::<u16>()
        .unwrap();
    // The same server, by address and by a name that resolves to loopback only.
    for uri in [
        format!("http://127.0.0.1:{port}/jwks"),
        format!("http://localhost:{port}/jwks"),
        format!("http://[::ffff:127.0.0.1]:{port}/jwks"),
    ] {
        let signer = agent(None, Some(uri.clone()));
        assert_eq!(
            keys.verified_claims(&signer, &assertion(&key, "1")).await,
            Err("the agent's jwks_uri could not be fetched"),
            "{uri}"
        );
    }
    assert_eq!(served.jwks_requests().await, 0, "no request reached it");
}
