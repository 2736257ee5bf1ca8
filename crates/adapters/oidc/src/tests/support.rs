//! Keys made in the test, tokens signed with them, and a provider (`wiremock`) that
//! publishes them: discovery document and JWK set, up or down on demand.

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use d2_kernel::{Clock, ManualClock};
use josekit::jwk::KeyPair as _;
use josekit::jwk::alg::ed::EdCurve;
use josekit::jws::{ES256, EdDSA, JwsSigner, RS256};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::{OidcProvider, OidcSettings};

pub(crate) const AUDIENCE: &str = "https://d2.test";

/// A signing key pair of one algorithm, with its kid.
pub(crate) struct TestKey {
    pub(crate) kid: String,
    pub(crate) alg: &'static str,
    signer: Box<dyn JwsSigner>,
    /// The public JWK, as the provider publishes it.
    public: Value,
    /// The public key, DER (SubjectPublicKeyInfo) and PEM.
    pub(crate) public_der: Vec<u8>,
    pub(crate) public_pem: Vec<u8>,
}

impl TestKey {
    pub(crate) fn rsa(kid: &str) -> TestKey {
        let pair = RS256.generate_key_pair(2048).unwrap();
        let signer = RS256.signer_from_jwk(&pair.to_jwk_private_key()).unwrap();
        Self::new(kid, "RS256", Box::new(signer), &pair)
    }

    pub(crate) fn ec(kid: &str) -> TestKey {
        let pair = ES256.generate_key_pair().unwrap();
        let signer = ES256.signer_from_jwk(&pair.to_jwk_private_key()).unwrap();
        Self::new(kid, "ES256", Box::new(signer), &pair)
    }

    pub(crate) fn ed(kid: &str) -> TestKey {
        let pair = EdDSA.generate_key_pair(EdCurve::Ed25519).unwrap();
        let signer = EdDSA.signer_from_jwk(&pair.to_jwk_private_key()).unwrap();
        Self::new(kid, "EdDSA", Box::new(signer), &pair)
    }

    fn new(
        kid: &str,
        alg: &'static str,
        signer: Box<dyn JwsSigner>,
        pair: &dyn josekit::jwk::KeyPair,
    ) -> TestKey {
        let mut public = Value::Object(pair.to_jwk_public_key().as_ref().clone());
        public["kid"] = kid.into();
        public["alg"] = alg.into();
        public["use"] = "sig".into();
        TestKey {
            kid: kid.to_owned(),
            alg,
            signer,
            public,
            public_der: pair.to_der_public_key(),
            public_pem: pair.to_pem_public_key(),
        }
    }

    pub(crate) fn public_jwk(&self) -> Value {
        self.public.clone()
    }

    /// The header this key's tokens carry: `alg`, `kid`, `typ`.
    pub(crate) fn header(&self) -> Value {
        json!({"alg": self.alg, "kid": self.kid, "typ": "JWT"})
    }

    /// A token of these claims under this key's header.
    pub(crate) fn sign(&self, claims: &Value) -> String {
        self.sign_with_header(&self.header(), claims)
    }

    /// A token of `claims` under `header`, whatever it says, signed with this key.
    pub(crate) fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        let input = format!("{}.{}", encode_json(header), encode_json(claims));
        let signature = self.signer.sign(input.as_bytes()).unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}

pub(crate) fn encode_json(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

/// A JWK set of these keys.
pub(crate) fn jwks(keys: &[&TestKey]) -> Value {
    json!({"keys": keys.iter().map(|key| key.public_jwk()).collect::<Vec<_>>()})
}

/// How the fake provider answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Up,
    /// 503 to everything.
    Down,
    /// 200 with a body that is not JSON.
    Garbage,
}

struct State {
    jwks: Value,
    mode: Mode,
    /// The discovery document's `issuer` (the server's URI unless a test changes it).
    issuer: String,
    /// The server's URI.
    base: String,
}

/// A provider on a random port: `/.well-known/openid-configuration` and `/jwks`.
pub(crate) struct FakeIdp {
    pub(crate) server: MockServer,
    state: Arc<Mutex<State>>,
}

struct Answer {
    state: Arc<Mutex<State>>,
    document: fn(&State) -> Value,
}

impl Respond for Answer {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let state = self.state.lock().unwrap();
        match state.mode {
            Mode::Up => ResponseTemplate::new(200).set_body_json((self.document)(&state)),
            Mode::Down => ResponseTemplate::new(503),
            Mode::Garbage => ResponseTemplate::new(200).set_body_string("<html>oops</html>"),
        }
    }
}

impl FakeIdp {
    pub(crate) async fn start(keys: &[&TestKey]) -> FakeIdp {
        let server = MockServer::start().await;
        let state = Arc::new(Mutex::new(State {
            jwks: jwks(keys),
            mode: Mode::Up,
            issuer: server.uri(),
            base: server.uri(),
        }));
        Mock::given(method("GET"))
            .and(path("/.well-known/openid-configuration"))
            .respond_with(Answer {
                state: Arc::clone(&state),
                document: |state| {
                    json!({
                        "issuer": state.issuer,
                        "jwks_uri": format!("{}/jwks", state.base),
                        "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
                    })
                },
            })
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/jwks"))
            .respond_with(Answer {
                state: Arc::clone(&state),
                document: |state| state.jwks.clone(),
            })
            .mount(&server)
            .await;
        FakeIdp { server, state }
    }

    pub(crate) fn issuer(&self) -> String {
        self.server.uri()
    }

    /// Publishes these keys from now on.
    pub(crate) fn publish(&self, keys: &[&TestKey]) {
        self.state.lock().unwrap().jwks = jwks(keys);
    }

    pub(crate) fn publish_document(&self, jwks: Value) {
        self.state.lock().unwrap().jwks = jwks;
    }

    pub(crate) fn set_mode(&self, mode: Mode) {
        self.state.lock().unwrap().mode = mode;
    }

    pub(crate) fn set_discovered_issuer(&self, issuer: &str) {
        issuer.clone_into(&mut self.state.lock().unwrap().issuer);
    }

    /// Requests received for `path` so far.
    pub(crate) async fn requests(&self, to: &str) -> usize {
        self.server
            .received_requests()
            .await
            .unwrap()
            .iter()
            .filter(|request| request.url.path() == to)
            .count()
    }

    pub(crate) async fn all_requests(&self) -> usize {
        self.server.received_requests().await.unwrap().len()
    }

    pub(crate) async fn jwks_requests(&self) -> usize {
        self.requests("/jwks").await
    }

    /// Settings for this provider and [`AUDIENCE`], with the role claim `role`.
    pub(crate) fn settings(&self) -> OidcSettings {
        let mut settings = OidcSettings::new(self.issuer(), AUDIENCE);
        settings.role_claim = Some("role".to_owned());
        settings
    }
}

/// A clock the test moves, starting at a fixed time.
pub(crate) fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(
        DateTime::parse_from_rfc3339("2026-11-22T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc),
    ))
}

pub(crate) async fn connect(settings: OidcSettings, clock: &Arc<ManualClock>) -> OidcProvider {
    let clock: Arc<dyn Clock> = clock.clone();
    OidcProvider::connect(settings, clock).await.unwrap()
}

/// The claims of a valid token for `issuer`, issued now, valid an hour.
pub(crate) fn claims(issuer: &str, now: DateTime<Utc>) -> Value {
    json!({
        "iss": issuer,
        "aud": AUDIENCE,
        "sub": "user-1",
        "iat": now.timestamp(),
        "exp": now.timestamp() + 3600,
        "email": "ada@example.test",
        "email_verified": true,
        "name": "Ada Lovelace",
        "role": "admin",
    })
}
