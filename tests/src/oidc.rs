//! A real OpenID provider for the tests (`scripts/oidc-provider.sh`, `tests/oidc`): panva's
//! oidc-provider issuing signed JWT access tokens for test users, with its discovery
//! document and JWKS, and key rotation on demand.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::Url;
use serde_json::Value;
use tokio::sync::OnceCell;

/// The provider's confidential client (`client_secret_basic` or `client_secret_post`).
pub const CLIENT_ID: &str = "d2-tests";
pub const CLIENT_SECRET: &str = "d2-tests-secret";
/// The grant type that issues a token for the user the request describes.
pub const TEST_USER_GRANT: &str = "urn:d2:test:user";

/// An OpenID provider on 127.0.0.1.
#[derive(Debug)]
pub struct OidcProvider {
    issuer: String,
    /// The directory of a provider of its own (`OidcProvider::start`), stopped on drop.
    own: Option<PathBuf>,
}

/// The user a token is issued for, and how.
#[derive(Debug, Clone, Default)]
pub struct TestUser {
    pub sub: String,
    pub email: Option<String>,
    /// Always in the token (`false` unless set), with or without an email.
    pub email_verified: bool,
    pub name: Option<String>,
    pub role: Option<String>,
    /// The token's `aud` (its resource indicator).
    pub audience: String,
    /// The token's lifetime (the provider's default: 3600).
    pub ttl_seconds: Option<u64>,
    /// `RS256` (the provider's default), `ES256` or `EdDSA`.
    pub alg: Option<&'static str>,
}

impl TestUser {
    pub fn new(sub: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            sub: sub.into(),
            audience: audience.into(),
            ..Self::default()
        }
    }

    pub fn email(mut self, email: impl Into<String>) -> Self {
        self.email = Some(email.into());
        self
    }

    pub fn email_verified(mut self, verified: bool) -> Self {
        self.email_verified = verified;
        self
    }

    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    pub fn role(mut self, role: impl Into<String>) -> Self {
        self.role = Some(role.into());
        self
    }

    pub fn ttl_seconds(mut self, seconds: u64) -> Self {
        self.ttl_seconds = Some(seconds);
        self
    }

    pub fn alg(mut self, alg: &'static str) -> Self {
        self.alg = Some(alg);
        self
    }

    /// The token request's parameters.
    fn params(&self) -> Vec<(&'static str, String)> {
        let mut params = vec![
            ("grant_type", TEST_USER_GRANT.to_owned()),
            ("sub", self.sub.clone()),
            ("resource", self.audience.clone()),
            ("email_verified", self.email_verified.to_string()),
        ];
        let optional = [
            ("email", self.email.clone()),
            ("name", self.name.clone()),
            ("role", self.role.clone()),
            ("ttl", self.ttl_seconds.map(|ttl| ttl.to_string())),
            ("alg", self.alg.map(str::to_owned)),
        ];
        params.extend(
            optional
                .into_iter()
                .filter_map(|(name, value)| Some((name, value?))),
        );
        params
    }
}

static SHARED: OnceCell<OidcProvider> = OnceCell::const_new();

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/oidc-provider.sh")
}

/// `scripts/oidc-provider.sh COMMAND` on the provider in `dir`; its standard output.
async fn run_script(dir: &Path, command: &str) -> String {
    let output = tokio::process::Command::new(script())
        .arg(command)
        .env("OIDC_DIR", dir)
        // The provider exits with this process, whether it is stopped or not.
        .env("OIDC_EXIT_WITH_PID", std::process::id().to_string())
        .output()
        .await
        .expect("scripts/oidc-provider.sh runs");
    assert!(
        output.status.success(),
        "oidc-provider.sh {command}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A directory of its own for a provider this process starts.
fn run_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/oidc/runs")
        .join(uuid::Uuid::new_v4().simple().to_string())
}

fn http() -> reqwest::Client {
    // reqwest is built without a default crypto provider; the process installs ring's.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

impl OidcProvider {
    /// The provider the suite shares: `D2_TEST_OIDC_URL` (as `scripts/test.sh` sets it),
    /// else one this process starts once; it exits with the process.
    pub async fn shared() -> &'static OidcProvider {
        SHARED
            .get_or_init(|| async {
                match std::env::var("D2_TEST_OIDC_URL") {
                    Ok(issuer) => OidcProvider {
                        issuer: issuer.trim_end_matches('/').to_owned(),
                        own: None,
                    },
                    Err(_) => OidcProvider {
                        issuer: run_script(&run_dir(), "start").await,
                        own: None,
                    },
                }
            })
            .await
    }

    /// A provider of the test's own (for tests that rotate its keys), stopped on drop.
    pub async fn start() -> OidcProvider {
        let dir = run_dir();
        let issuer = run_script(&dir, "start").await;
        OidcProvider {
            issuer,
            own: Some(dir),
        }
    }

    /// The issuer, `http://127.0.0.1:PORT`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The token endpoint.
    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.issuer)
    }

    /// The discovery document (`/.well-known/openid-configuration`).
    pub async fn discovery(&self) -> Value {
        get_json(&format!("{}/.well-known/openid-configuration", self.issuer)).await
    }

    /// The JWKS, fetched from the discovery document's `jwks_uri`.
    pub async fn jwks(&self) -> Value {
        let discovery = self.discovery().await;
        let uri = discovery["jwks_uri"].as_str().expect("a jwks_uri");
        get_json(uri).await
    }

    /// A signed JWT access token for `user`, from the token endpoint (custom grant, client
    /// authentication by HTTP Basic).
    pub async fn token(&self, user: &TestUser) -> String {
        let mut form = Url::parse("http://form.invalid/").expect("a URL");
        form.query_pairs_mut().extend_pairs(user.params());
        let response = http()
            .post(self.token_endpoint())
            .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.query().unwrap_or_default().to_owned())
            .send()
            .await
            .expect("the OpenID provider answers");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(status.is_success(), "token request for {user:?}: {text}");
        let body: Value = serde_json::from_str(&text).expect("a token response");
        body["access_token"]
            .as_str()
            .expect("an access_token")
            .to_owned()
    }

    /// A client for browser sign-in redirecting to `redirect_uris` (with `existing`, that
    /// client's redirect URIs replaced): its id and secret.
    pub async fn browser_client(
        &self,
        redirect_uris: &[String],
        existing: Option<(&str, &str)>,
    ) -> (String, String) {
        let mut body = serde_json::json!({ "redirect_uris": redirect_uris });
        if let Some((id, secret)) = existing {
            body["client_id"] = id.into();
            body["client_secret"] = secret.into();
        }
        let response = http()
            .post(format!("{}/test/clients", self.issuer))
            .json(&body)
            .send()
            .await
            .expect("the OpenID provider answers");
        assert!(response.status().is_success(), "client registration failed");
        let body: Value = response.json().await.expect("JSON");
        (
            body["client_id"].as_str().expect("a client_id").to_owned(),
            body["client_secret"]
                .as_str()
                .expect("a client_secret")
                .to_owned(),
        )
    }

    /// Signs with new keys from now on; the JWKS lists them first, then the keys they
    /// replace (one generation back: after two rotations the first keys are gone). Returns
    /// the new kids (RS256, ES256, EdDSA).
    pub async fn rotate_keys(&self) -> Vec<String> {
        let response = http()
            .post(format!("{}/test/rotate", self.issuer))
            .send()
            .await
            .expect("the OpenID provider answers");
        assert!(response.status().is_success(), "key rotation failed");
        let body: Value = response.json().await.expect("JSON");
        body["kids"]
            .as_array()
            .expect("kids")
            .iter()
            .map(|kid| kid.as_str().expect("a kid").to_owned())
            .collect()
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        if let Some(dir) = &self.own {
            let _ = std::process::Command::new(script())
                .arg("stop")
                .env("OIDC_DIR", dir)
                .output();
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

async fn get_json(url: &str) -> Value {
    let response = http()
        .get(url)
        .send()
        .await
        .expect("the OpenID provider answers");
    assert!(response.status().is_success(), "GET {url}");
    response.json().await.expect("JSON")
}

/// The header and payload of a JWT, decoded without checking its signature.
pub fn decode_jwt(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let mut next = || {
        let part = parts.next().expect("a JWT of three parts");
        let bytes = URL_SAFE_NO_PAD.decode(part).expect("base64url");
        serde_json::from_slice::<Value>(&bytes).expect("JSON")
    };
    let header = next();
    let payload = next();
    (header, payload)
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_carry_the_user_and_the_signing_key_asked_for() {
    let provider = OidcProvider::shared().await;
    let discovery = provider.discovery().await;
    assert_eq!(discovery["issuer"], provider.issuer());
    assert_eq!(discovery["token_endpoint"], provider.token_endpoint());
    let kids: Vec<Value> = provider.jwks().await["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|key| key["kid"].clone())
        .collect();

    let user = TestUser::new("user-1", "https://d2.test")
        .email("ada@example.test")
        .email_verified(true)
        .name("Ada")
        .role("admin")
        .ttl_seconds(120);
    let (header, payload) = decode_jwt(&provider.token(&user).await);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["typ"], "at+jwt");
    assert!(kids.contains(&header["kid"]), "{header} in {kids:?}");
    assert_eq!(payload["iss"], provider.issuer());
    assert_eq!(payload["aud"], "https://d2.test");
    assert_eq!(payload["sub"], "user-1");
    assert_eq!(payload["client_id"], CLIENT_ID);
    assert_eq!(payload["email"], "ada@example.test");
    assert_eq!(payload["email_verified"], true);
    assert_eq!(payload["name"], "Ada");
    assert_eq!(payload["role"], "admin");
    assert!(payload["jti"].is_string());
    assert_eq!(
        payload["exp"].as_u64(),
        payload["iat"].as_u64().map(|iat| iat + 120)
    );

    for alg in ["ES256", "EdDSA"] {
        let (header, payload) = decode_jwt(
            &provider
                .token(&TestUser::new("user-2", "d2").alg(alg))
                .await,
        );
        assert_eq!(header["alg"], alg);
        assert!(kids.contains(&header["kid"]), "{header} in {kids:?}");
        assert_eq!(payload["sub"], "user-2");
        assert_eq!(payload["email_verified"], false);
        assert!(payload.get("email").is_none(), "{payload}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rotated_keys_sign_new_tokens_and_the_previous_ones_stay_published() {
    let provider = OidcProvider::start().await;
    let user = TestUser::new("user-1", "d2").email("ada@example.test");
    let (before, _) = decode_jwt(&provider.token(&user).await);

    let new_kids = provider.rotate_keys().await;
    assert_eq!(new_kids.len(), 3, "{new_kids:?}");
    let (after, payload) = decode_jwt(&provider.token(&user).await);
    assert_ne!(after["kid"], before["kid"]);
    assert_eq!(after["kid"], new_kids[0].as_str());
    assert_eq!(payload["email"], "ada@example.test");

    let published: Vec<String> = provider.jwks().await["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|key| key["kid"].as_str().expect("a kid").to_owned())
        .collect();
    assert_eq!(published.len(), 6, "{published:?}");
    assert_eq!(published[..3], new_kids[..], "the new keys come first");
    let old_kid = before["kid"].as_str().expect("a kid").to_owned();
    assert!(published[3..].contains(&old_kid), "{published:?}");
}
