//! How keys are fetched: at start, on an unknown kid (at most once per interval, one at a
//! time), in the background, and what an outage changes.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::Duration;
use d2_kernel::{Clock, ManualClock};
use d2_members::{IdentityError, IdentityProvider};
use tokio::task::JoinSet;

use super::support::{FakeIdp, Mode, TestKey, claims, clock, connect};
use crate::{OidcProvider, OidcSettings};

const DISCOVERY: &str = "/.well-known/openid-configuration";

/// Verifies every token at once, each on its own task.
async fn verify_all(
    provider: &Arc<OidcProvider>,
    tokens: Vec<String>,
) -> Vec<Result<(), IdentityError>> {
    let mut tasks = JoinSet::new();
    for token in tokens {
        let provider = Arc::clone(provider);
        tasks.spawn(async move { provider.verify(&token).await.map(|_| ()) });
    }
    tasks.join_all().await
}

/// Tokens naming made-up kids, signed (with a key nobody publishes).
fn garbage(issuer: &str, clock: &ManualClock, count: usize) -> Vec<String> {
    let key = TestKey::ec("unused");
    let claims = claims(issuer, clock.now());
    (0..count)
        .map(|i| {
            let header = serde_json::json!({"alg": "ES256", "kid": format!("random-{i}")});
            key.sign_with_header(&header, &claims)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_kid_refetches_at_most_once_per_interval() {
    let old = TestKey::rsa("old");
    let idp = FakeIdp::start(&[&old]).await;
    let clock = clock();
    let provider = Arc::new(connect(idp.settings(), &clock).await);
    assert_eq!(
        (idp.requests(DISCOVERY).await, idp.jwks_requests().await),
        (1, 1)
    );

    // The provider rotates: a token of the new key triggers one fetch and verifies.
    let new = TestKey::ed("new");
    idp.publish(&[&new, &old]);
    let token = new.sign(&claims(&idp.issuer(), clock.now()));
    assert!(provider.verify(&token).await.is_ok());
    assert_eq!(idp.jwks_requests().await, 2);
    assert_eq!(provider.cached_keys(), Some(2));
    assert!(provider.verify(&token).await.is_ok());
    assert_eq!(idp.jwks_requests().await, 2, "a known kid fetches nothing");
    assert_eq!(
        idp.requests(DISCOVERY).await,
        1,
        "the discovered address is kept"
    );

    // Within the interval, made-up kids fetch nothing.
    let results = verify_all(&provider, garbage(&idp.issuer(), &clock, 50)).await;
    assert!(
        results
            .iter()
            .all(|result| *result == Err(IdentityError::Invalid("unknown signing key")))
    );
    assert_eq!(idp.jwks_requests().await, 2);

    // After it, a burst of them makes one fetch, shared by all.
    clock.advance(Duration::seconds(10));
    let results = verify_all(&provider, garbage(&idp.issuer(), &clock, 50)).await;
    assert_eq!(results.len(), 50);
    assert!(
        results
            .iter()
            .all(|result| *result == Err(IdentityError::Invalid("unknown signing key")))
    );
    assert_eq!(idp.jwks_requests().await, 3);

    clock.advance(Duration::seconds(9));
    verify_all(&provider, garbage(&idp.issuer(), &clock, 50)).await;
    assert_eq!(idp.jwks_requests().await, 3);
    clock.advance(Duration::seconds(1));
    verify_all(&provider, garbage(&idp.issuer(), &clock, 50)).await;
    assert_eq!(idp.jwks_requests().await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_down_at_start_is_unavailable_until_a_fetch_succeeds() {
    let key = TestKey::rsa("rsa-1");
    let idp = FakeIdp::start(&[&key]).await;
    idp.set_mode(Mode::Down);
    let clock = clock();
    let provider = Arc::new(connect(idp.settings(), &clock).await);
    assert_eq!(provider.cached_keys(), None);
    let token = key.sign(&claims(&idp.issuer(), clock.now()));

    // The first token tries a fetch (rate limited from then on); still down.
    assert!(matches!(
        provider.verify(&token).await,
        Err(IdentityError::Unavailable(reason)) if reason.contains("503")
    ));
    assert_eq!(idp.requests(DISCOVERY).await, 2);
    idp.set_mode(Mode::Up);
    assert!(matches!(
        provider.verify(&token).await,
        Err(IdentityError::Unavailable(_))
    ));
    assert_eq!(
        idp.requests(DISCOVERY).await,
        2,
        "held back by refetch_min_seconds"
    );
    assert_eq!(idp.jwks_requests().await, 0);

    // Once the interval is over, concurrent tokens share one fetch.
    clock.advance(Duration::seconds(10));
    let results = verify_all(&provider, vec![token; 20]).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(idp.requests(DISCOVERY).await, 3);
    assert_eq!(idp.jwks_requests().await, 1);
    assert_eq!(provider.cached_keys(), Some(1));
}

#[tokio::test]
async fn an_unreachable_provider_is_unavailable() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let clock = clock();
    let mut settings = OidcSettings::new(format!("http://127.0.0.1:{port}"), "d2");
    settings.timeout_seconds = 2;
    let provider = connect(settings, &clock).await;
    let key = TestKey::rsa("rsa-1");
    let mut claims = claims(&format!("http://127.0.0.1:{port}"), clock.now());
    claims["aud"] = "d2".into();
    assert!(matches!(
        provider.verify(&key.sign(&claims)).await,
        Err(IdentityError::Unavailable(_))
    ));
    // Refusals that need no key stay what they are.
    assert_eq!(
        provider.verify("x.y").await,
        Err(IdentityError::Invalid("malformed token"))
    );
}

#[tokio::test]
async fn cached_keys_stay_in_use_while_the_provider_is_down() {
    let key = TestKey::ec("ec-1");
    let idp = FakeIdp::start(&[&key]).await;
    let clock = clock();
    let provider = connect(idp.settings(), &clock).await;
    let token = key.sign(&claims(&idp.issuer(), clock.now()));
    let stranger = TestKey::ec("ec-2").sign(&claims(&idp.issuer(), clock.now()));

    // Each unknown kid below tries one fetch (of the key set, then, after that failed,
    // of the discovery document), which fails: the cached set decides.
    for (mode, requests) in [(Mode::Down, 3), (Mode::Garbage, 4)] {
        idp.set_mode(mode);
        clock.advance(Duration::seconds(60));
        assert!(provider.verify(&token).await.is_ok(), "{mode:?}");
        assert_eq!(
            provider.verify(&stranger).await,
            Err(IdentityError::Invalid("unknown signing key")),
            "{mode:?}"
        );
        assert_eq!(idp.all_requests().await, requests, "{mode:?}");
        assert_eq!(provider.cached_keys(), Some(1));
    }
    idp.set_mode(Mode::Up);
    clock.advance(Duration::seconds(60));
    assert!(provider.verify(&token).await.is_ok());
    assert_eq!(idp.all_requests().await, 4);
}

#[tokio::test]
async fn the_discovered_issuer_must_be_the_configured_one() {
    let key = TestKey::rsa("rsa-1");
    let idp = FakeIdp::start(&[&key]).await;
    idp.set_discovered_issuer("https://someone-else.test");
    let clock = clock();
    let provider = connect(idp.settings(), &clock).await;
    assert_eq!(provider.cached_keys(), None);
    assert_eq!(idp.jwks_requests().await, 0);
    let token = key.sign(&claims(&idp.issuer(), clock.now()));
    assert!(matches!(
        provider.verify(&token).await,
        Err(IdentityError::Unavailable(reason)) if reason.contains("someone-else")
    ));
}

#[tokio::test]
async fn a_configured_jwks_url_skips_discovery() {
    let key = TestKey::rsa("rsa-1");
    let idp = FakeIdp::start(&[&key]).await;
    let clock = clock();
    let mut settings = idp.settings();
    settings.jwks_url = Some(format!("{}/jwks", idp.issuer()));
    let provider = connect(settings, &clock).await;
    assert!(
        provider
            .verify(&key.sign(&claims(&idp.issuer(), clock.now())))
            .await
            .is_ok()
    );
    assert_eq!(
        (idp.requests(DISCOVERY).await, idp.jwks_requests().await),
        (0, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_refresh_in_the_background_until_the_provider_is_dropped() {
    let old = TestKey::rsa("old");
    let idp = FakeIdp::start(&[&old]).await;
    let clock = clock();
    let mut settings = idp.settings();
    settings.refresh_seconds = 1;
    let provider = connect(settings, &clock).await;
    // Spend the token-triggered fetch of the interval (the clock stays put): whatever is
    // fetched from now on is fetched in the background.
    let stranger = TestKey::ec("stranger").sign(&claims(&idp.issuer(), clock.now()));
    assert!(provider.verify(&stranger).await.is_err());
    assert_eq!(idp.jwks_requests().await, 2);

    let new = TestKey::ec("new");
    idp.publish(&[&new]);
    // The refresh is due a second after the start; allow a busy machine some slack.
    let deadline = tokio::time::Instant::now() + StdDuration::from_secs(10);
    while idp.jwks_requests().await < 3 {
        assert!(tokio::time::Instant::now() < deadline, "no refresh");
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
    assert!(
        provider
            .verify(&new.sign(&claims(&idp.issuer(), clock.now())))
            .await
            .is_ok()
    );
    assert_eq!(provider.cached_keys(), Some(1), "the old key is gone");

    drop(provider);
    tokio::time::sleep(StdDuration::from_millis(100)).await;
    let after_drop = idp.jwks_requests().await;
    tokio::time::sleep(StdDuration::from_millis(2200)).await;
    assert_eq!(
        idp.jwks_requests().await,
        after_drop,
        "no refresh once dropped"
    );
}

#[tokio::test]
async fn connect_refuses_invalid_settings() {
    let clock: Arc<dyn Clock> = clock();
    let error = OidcProvider::connect(OidcSettings::new("idp.test", "d2"), Arc::clone(&clock))
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid setting `auth.idp.issuer`: must be an http(s) URL"
    );
}
