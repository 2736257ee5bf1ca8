//! What a token must be to verify, against a provider publishing keys made here.

use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Duration;
use d2_kernel::{Clock as _, Role};
use d2_members::{Identity, IdentityError, IdentityProvider as _, VerifiedIdentity};
use josekit::jws::HS256;
use serde_json::{Value, json};

use super::support::{AUDIENCE, FakeIdp, TestKey, claims, clock, connect, encode_json};

/// A provider publishing one key of each algorithm; the keys, in that order.
async fn idp() -> (FakeIdp, [TestKey; 3]) {
    let keys = [
        TestKey::rsa("rsa-1"),
        TestKey::ec("ec-1"),
        TestKey::ed("ed-1"),
    ];
    let idp = FakeIdp::start(&[&keys[0], &keys[1], &keys[2]]).await;
    (idp, keys)
}

fn invalid(result: Result<VerifiedIdentity, IdentityError>) -> &'static str {
    match result {
        Err(IdentityError::Invalid(reason)) => reason,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[tokio::test]
async fn tokens_of_each_algorithm_verify_and_map_their_claims() {
    let (idp, keys) = idp().await;
    let clock = clock();
    let provider = connect(idp.settings(), &clock).await;
    assert_eq!(provider.cached_keys(), Some(3));
    let now = clock.now();

    for key in &keys {
        let verified = provider
            .verify(&key.sign(&claims(&idp.issuer(), now)))
            .await
            .unwrap_or_else(|error| panic!("{}: {error:?}", key.alg));
        assert_eq!(
            verified,
            VerifiedIdentity {
                identity: Identity {
                    issuer: idp.issuer(),
                    subject: "user-1".into(),
                    email: Some("ada@example.test".into()),
                    email_verified: true,
                    display_name: Some("Ada Lovelace".into()),
                    role_cap: Some(Role::Admin),
                },
                expires_at: now + Duration::hours(1),
            },
            "{}",
            key.alg
        );
    }
    // One discovery, one key set: nothing fetched per token.
    assert_eq!(idp.requests("/.well-known/openid-configuration").await, 1);
    assert_eq!(idp.jwks_requests().await, 1);
}

#[tokio::test]
async fn role_claims_cap_and_a_value_naming_no_role_caps_at_member() {
    let (idp, keys) = idp().await;
    let clock = clock();
    let provider = connect(idp.settings(), &clock).await;
    let key = &keys[1];
    let role_cap = async |role: Option<Value>| {
        let mut claims = claims(&idp.issuer(), clock.now());
        match role {
            Some(role) => claims["role"] = role,
            None => {
                claims.as_object_mut().unwrap().remove("role");
            }
        }
        provider
            .verify(&key.sign(&claims))
            .await
            .unwrap()
            .identity
            .role_cap
    };
    assert_eq!(
        role_cap(Some(json!("developer"))).await,
        Some(Role::Developer)
    );
    assert_eq!(role_cap(Some(json!("User"))).await, Some(Role::Member));
    assert_eq!(role_cap(Some(json!("superuser"))).await, Some(Role::Member));
    assert_eq!(role_cap(Some(json!(42))).await, Some(Role::Member));
    assert_eq!(
        role_cap(Some(json!(["member", "owner"]))).await,
        Some(Role::Owner)
    );
    assert_eq!(role_cap(None).await, None);

    // No role claim configured: no cap, whatever the token says.
    let mut settings = idp.settings();
    settings.role_claim = None;
    let uncapped = connect(settings, &clock).await;
    let token = key.sign(&claims(&idp.issuer(), clock.now()));
    assert_eq!(
        uncapped.verify(&token).await.unwrap().identity.role_cap,
        None
    );
}

#[tokio::test]
async fn email_and_name_come_from_their_claims_and_verification_must_be_true() {
    let (idp, keys) = idp().await;
    let clock = clock();
    let mut settings = idp.settings();
    settings.email_claim = "upn".into();
    settings.name_claim = "preferred_username".into();
    let provider = connect(settings, &clock).await;

    let mut claims = claims(&idp.issuer(), clock.now());
    claims["upn"] = "ada@corp.test".into();
    claims["preferred_username"] = "ada".into();
    claims["email_verified"] = "true".into();
    let identity = provider
        .verify(&keys[2].sign(&claims))
        .await
        .unwrap()
        .identity;
    assert_eq!(identity.email.as_deref(), Some("ada@corp.test"));
    assert_eq!(identity.display_name.as_deref(), Some("ada"));
    assert!(!identity.email_verified, "only the boolean true verifies");

    for name in ["upn", "preferred_username", "email_verified"] {
        claims.as_object_mut().unwrap().remove(name);
    }
    let identity = provider
        .verify(&keys[2].sign(&claims))
        .await
        .unwrap()
        .identity;
    assert_eq!(identity.email, None);
    assert_eq!(identity.display_name, None);
    assert!(!identity.email_verified);
}

#[tokio::test]
async fn expiry_is_checked_on_the_clock_with_leeway() {
    let (idp, keys) = idp().await;
    let clock = clock();
    let provider = connect(idp.settings(), &clock).await;
    let key = &keys[0];
    let now = clock.now();
    let expiring = |seconds_from_now: i64| {
        let mut claims = claims(&idp.issuer(), now);
        claims["iat"] = (now.timestamp() - 7200).into();
        claims["exp"] = (now.timestamp() + seconds_from_now).into();
        key.sign(&claims)
    };

    assert!(
        provider.verify(&expiring(-29)).await.is_ok(),
        "within the leeway"
    );
    assert_eq!(
        provider.verify(&expiring(-30)).await,
        Err(IdentityError::Expired)
    );
    assert_eq!(
        provider.verify(&expiring(-3600)).await,
        Err(IdentityError::Expired)
    );

    let token = expiring(60);
    assert!(provider.verify(&token).await.is_ok());
    clock.advance(Duration::seconds(89));
    assert!(provider.verify(&token).await.is_ok());
    clock.advance(Duration::seconds(1));
    assert_eq!(provider.verify(&token).await, Err(IdentityError::Expired));

    let mut claims = claims(&idp.issuer(), now);
    claims.as_object_mut().unwrap().remove("exp");
    assert_eq!(
        invalid(provider.verify(&key.sign(&claims)).await),
        "missing or malformed `exp`"
    );
    claims["exp"] = "tomorrow".into();
    assert_eq!(
        invalid(provider.verify(&key.sign(&claims)).await),
        "missing or malformed `exp`"
    );
}

#[tokio::test]
async fn tokens_not_yet_valid_are_refused() {
    let (idp, keys) = idp().await;
    let clock = clock();
    let provider = connect(idp.settings(), &clock).await;
    let now = clock.now().timestamp();
    let with = |name: &str, value: i64| {
        let mut claims = claims(&idp.issuer(), clock.now());
        claims[name] = value.into();
        keys[0].sign(&claims)
    };
    assert_eq!(
        invalid(provider.verify(&with("nbf", now + 31)).await),
        "token not yet valid"
    );
    assert_eq!(
        invalid(provider.verify(&with("iat", now + 31)).await),
        "token issued in the future"
    );
    assert!(
        provider.verify(&with("nbf", now + 30)).await.is_ok(),
        "within the leeway"
    );
    assert!(
        provider.verify(&with("iat", now + 30)).await.is_ok(),
        "within the leeway"
    );
    assert!(provider.verify(&with("nbf", now - 600)).await.is_ok());
}

#[tokio::test]
async fn issuer_audience_and_subject_must_match() {
    let (idp, keys) = idp().await;
    let clock = clock();
    let provider = connect(idp.settings(), &clock).await;
    let with = |name: &str, value: Value| {
        let mut claims = claims(&idp.issuer(), clock.now());
        match value {
            Value::Null => {
                claims.as_object_mut().unwrap().remove(name);
            }
            value => claims[name] = value,
        }
        keys[0].sign(&claims)
    };

    for aud in [
        json!("https://other.test"),
        json!(["https://other.test"]),
        Value::Null,
        json!(1),
    ] {
        assert_eq!(
            invalid(provider.verify(&with("aud", aud)).await),
            "wrong audience"
        );
    }
    assert!(
        provider
            .verify(&with("aud", json!(["x", AUDIENCE])))
            .await
            .is_ok()
    );

    let trailing_slash = format!("{}/", idp.issuer());
    for iss in [
        json!("https://evil.test"),
        json!(trailing_slash),
        Value::Null,
    ] {
        assert_eq!(
            invalid(provider.verify(&with("iss", iss)).await),
            "wrong issuer"
        );
    }

    for sub in [json!(""), json!(7), Value::Null] {
        assert_eq!(
            invalid(provider.verify(&with("sub", sub)).await),
            "missing subject"
        );
    }

    // An expired token of another audience is not for us at all.
    let mut claims = claims(&idp.issuer(), clock.now());
    claims["aud"] = "https://other.test".into();
    claims["exp"] = (clock.now().timestamp() - 3600).into();
    assert_eq!(
        invalid(provider.verify(&keys[0].sign(&claims)).await),
        "wrong audience"
    );
}

#[tokio::test]
async fn keys_are_chosen_by_kid_and_must_be_published() {
    let (idp, keys) = idp().await;
    let clock = clock();
    let provider = connect(idp.settings(), &clock).await;
    let claims = claims(&idp.issuer(), clock.now());

    let stranger = TestKey::rsa("rsa-stranger");
    assert_eq!(
        invalid(provider.verify(&stranger.sign(&claims)).await),
        "unknown signing key"
    );

    // Another key's signature under a published kid.
    let impostor = TestKey::rsa("rsa-1");
    assert_eq!(
        invalid(provider.verify(&impostor.sign(&claims)).await),
        "bad signature"
    );

    // An ES256 header naming the RSA key.
    let header = json!({"alg": "ES256", "kid": "rsa-1"});
    assert_eq!(
        invalid(
            provider
                .verify(&keys[1].sign_with_header(&header, &claims))
                .await
        ),
        "the signing key does not fit the algorithm"
    );

    // No kid: fine while one key fits the algorithm.
    for key in &keys {
        let token = key.sign_with_header(&json!({"alg": key.alg}), &claims);
        assert!(provider.verify(&token).await.is_ok(), "{}", key.alg);
    }
    let second_rsa = TestKey::rsa("rsa-2");
    let two_rsa = FakeIdp::start(&[&keys[0], &second_rsa]).await;
    let provider = connect(two_rsa.settings(), &clock).await;
    let claims = super::support::claims(&two_rsa.issuer(), clock.now());
    let token = keys[0].sign_with_header(&json!({"alg": "RS256"}), &claims);
    assert_eq!(
        invalid(provider.verify(&token).await),
        "the token names no key and several fit"
    );
    let token = keys[1].sign_with_header(&json!({"alg": "ES256"}), &claims);
    assert_eq!(
        invalid(provider.verify(&token).await),
        "no signing key for the algorithm"
    );
}

#[tokio::test]
async fn keys_not_for_signatures_are_ignored() {
    let key = TestKey::rsa("rsa-enc");
    let mut jwk = key.public_jwk();
    jwk["use"] = "enc".into();
    let idp = FakeIdp::start(&[]).await;
    idp.publish_document(json!({"keys": [jwk]}));
    let clock = clock();
    let provider = connect(idp.settings(), &clock).await;
    assert_eq!(provider.cached_keys(), Some(0));
    let token = key.sign(&claims(&idp.issuer(), clock.now()));
    assert_eq!(
        invalid(provider.verify(&token).await),
        "unknown signing key"
    );
}

#[tokio::test]
async fn alg_none_and_hmac_with_the_public_key_are_refused() {
    let (idp, keys) = idp().await;
    let clock = clock();
    let provider = connect(idp.settings(), &clock).await;
    let claims = claims(&idp.issuer(), clock.now());
    let rsa = &keys[0];

    // `alg: none`, with the empty signature it calls for, then with one.
    let unsigned = format!(
        "{}.{}.",
        encode_json(&json!({"alg": "none", "kid": "rsa-1"})),
        encode_json(&claims)
    );
    assert_eq!(invalid(provider.verify(&unsigned).await), "malformed token");
    for alg in ["none", "None", "NONE"] {
        let header = json!({"alg": alg, "kid": "rsa-1"});
        let token = format!("{}.{}.AAAA", encode_json(&header), encode_json(&claims));
        assert_eq!(
            invalid(provider.verify(&token).await),
            "unsupported algorithm",
            "{alg}"
        );
    }

    // HS256 with the RSA public key as the HMAC secret: its PEM, its DER, its n and e.
    let jwk = rsa.public_jwk();
    let n = jwk["n"].as_str().unwrap();
    let e = jwk["e"].as_str().unwrap();
    let secrets: [Vec<u8>; 5] = [
        rsa.public_pem.clone(),
        rsa.public_der.clone(),
        n.as_bytes().to_vec(),
        format!("{n}{e}").into_bytes(),
        serde_json::to_vec(&jwk).unwrap(),
    ];
    for secret in secrets {
        let signer = HS256.signer_from_bytes(&secret).unwrap();
        for header in [
            json!({"alg": "HS256", "kid": "rsa-1"}),
            json!({"alg": "HS256"}),
        ] {
            let input = format!("{}.{}", encode_json(&header), encode_json(&claims));
            let signature = josekit::jws::JwsSigner::sign(&signer, input.as_bytes()).unwrap();
            let token = format!("{input}.{}", base64_url(&signature));
            assert_eq!(
                invalid(provider.verify(&token).await),
                "unsupported algorithm"
            );
        }
    }
}

fn base64_url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test]
async fn tampered_tokens_are_refused() {
    let (idp, keys) = idp().await;
    let clock = clock();
    let provider = connect(idp.settings(), &clock).await;
    let claims = claims(&idp.issuer(), clock.now());

    for key in &keys {
        let token = key.sign(&claims);
        let mut forged = claims.clone();
        forged["sub"] = "user-2".into();
        forged["role"] = "owner".into();
        let parts: Vec<&str> = token.split('.').collect();
        let tampered = format!("{}.{}.{}", parts[0], encode_json(&forged), parts[2]);
        assert_eq!(
            invalid(provider.verify(&tampered).await),
            "bad signature",
            "{}",
            key.alg
        );

        // A header changed after signing (here: its typ) breaks the signature too.
        let mut header = key.header();
        header["typ"] = "at+jwt".into();
        let tampered = format!("{}.{}.{}", encode_json(&header), parts[1], parts[2]);
        assert_eq!(
            invalid(provider.verify(&tampered).await),
            "bad signature",
            "{}",
            key.alg
        );

        // A signature cut short.
        let mut signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        signature.truncate(signature.len() - 1);
        let short = format!(
            "{}.{}.{}",
            parts[0],
            parts[1],
            URL_SAFE_NO_PAD.encode(&signature)
        );
        assert_eq!(
            invalid(provider.verify(&short).await),
            "bad signature",
            "{}",
            key.alg
        );
    }
    let token = keys[0].sign(&claims);
    let noncanonical = format!("{}.e30.AB", token.split('.').next().unwrap());
    assert_eq!(
        invalid(provider.verify(&noncanonical).await),
        "malformed token signature"
    );
}

#[tokio::test]
async fn malformed_and_oversized_tokens_are_refused_without_fetching() {
    let (idp, keys) = idp().await;
    let clock = clock();
    let provider = connect(idp.settings(), &clock).await;
    let valid = keys[0].sign(&claims(&idp.issuer(), clock.now()));

    let long_claims = {
        let mut claims = claims(&idp.issuer(), clock.now());
        claims["padding"] = "x".repeat(16 * 1024).into();
        claims
    };
    let cases = [
        (String::new(), "malformed token"),
        ("Bearer x.y.z".to_owned(), "malformed token"),
        (format!("{valid}.x"), "malformed token"),
        (format!(" {valid}"), "malformed token"),
        (valid.replacen('.', "..", 1), "malformed token"),
        (format!("{valid}+"), "malformed token"),
        (
            format!(
                "{}.{}.c2ln",
                encode_json(&json!(["RS256"])),
                encode_json(&json!({}))
            ),
            "malformed token header",
        ),
        ("e30.e30.c2ln".to_owned(), "malformed token header"),
        ("!".repeat(20 * 1024), "token too long"),
        (keys[0].sign(&long_claims), "token too long"),
    ];
    for (token, reason) in cases {
        assert_eq!(
            invalid(provider.verify(&token).await),
            reason,
            "{:.60}",
            token
        );
    }
    // A signed payload that is not a JSON object.
    let token = keys[0].sign(&json!(null));
    assert_eq!(
        invalid(provider.verify(&token).await),
        "malformed token claims"
    );
    assert_eq!(idp.jwks_requests().await, 1, "refusals fetch nothing");
    assert!(provider.verify(&valid).await.is_ok());
}

/// Everything this crate logs, at every level, from the first call on (the subscriber is
/// the process's: a scoped one misses events whose callsites other tests registered first).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn captured_logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("d2_oidc=trace")
            .with_ansi(false)
            .with_writer({
                let captured = captured.clone();
                move || captured.clone()
            })
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        captured
    })
}

#[tokio::test]
async fn neither_errors_nor_logs_repeat_the_token() {
    let captured = captured_logs();
    let (idp, keys) = idp().await;
    let clock = clock();
    let provider = connect(idp.settings(), &clock).await;
    let claims = claims(&idp.issuer(), clock.now());
    let valid = keys[0].sign(&claims);
    let mut expired_claims = claims.clone();
    expired_claims["exp"] = 0.into();
    let tokens = [
        valid.clone(),
        format!("{valid}x"),
        TestKey::ec("unknown").sign(&claims),
        keys[1].sign(&expired_claims),
        format!("{}.{}.", valid.split('.').next().unwrap(), "e30"),
    ];
    let mut errors = Vec::new();
    for token in &tokens {
        if let Err(error) = provider.verify(token).await {
            errors.push(format!("{error} {error:?}"));
        }
    }
    assert_eq!(errors.len(), 4);
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(log.contains("sign-in token refused"), "{log}");
    assert!(log.contains("identity provider keys updated"), "{log}");
    for token in tokens {
        for part in token.split('.').filter(|part| part.len() > 8) {
            assert!(!log.contains(part), "the log repeats a token: {log}");
            assert!(
                errors.iter().all(|error| !error.contains(part)),
                "{errors:?}"
            );
        }
    }
}
