//! Against panva's oidc-provider (`scripts/oidc-provider.sh`, `tests/oidc/server.mjs`):
//! tokens from its token endpoint, keys from its discovery document, rotation on demand.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use d2_kernel::{Clock, Role, SystemClock};
use d2_members::IdentityProvider as _;
use reqwest::Url;
use serde_json::Value;

use crate::{OidcProvider, OidcSettings};

const AUDIENCE: &str = "https://d2.test";

/// A provider of this test's own, stopped (and its directory removed) on drop.
struct RealProvider {
    dir: PathBuf,
    issuer: String,
    http: reqwest::Client,
}

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../..")
}

/// `scripts/oidc-provider.sh COMMAND` for the provider in `dir`.
fn script(dir: &Path, command: &str) -> std::process::Output {
    Command::new(repository().join("scripts/oidc-provider.sh"))
        .arg(command)
        .env("OIDC_DIR", dir)
        // The provider exits with this process, should the guard not run.
        .env("OIDC_EXIT_WITH_PID", std::process::id().to_string())
        .output()
        .expect("scripts/oidc-provider.sh runs")
}

impl RealProvider {
    /// Starts a provider (installing its npm packages on first use).
    async fn start() -> RealProvider {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = repository()
            .join("target/oidc/runs")
            .join(format!("d2-oidc-{}-{nanos}", std::process::id()));
        let started = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || script(&dir, "start"))
                .await
                .unwrap()
        };
        assert!(
            started.status.success(),
            "oidc-provider.sh start: {}",
            String::from_utf8_lossy(&started.stderr)
        );
        let issuer = String::from_utf8_lossy(&started.stdout).trim().to_owned();
        let _ = rustls::crypto::ring::default_provider().install_default();
        RealProvider {
            dir,
            issuer,
            http: reqwest::Client::new(),
        }
    }

    /// A token from the token endpoint (grant `urn:d2:test:user`, client by HTTP Basic).
    async fn token(&self, sub: &str, alg: &str, role: &str) -> String {
        let mut form = Url::parse("http://form.invalid/").unwrap();
        form.query_pairs_mut().extend_pairs([
            ("grant_type", "urn:d2:test:user"),
            ("sub", sub),
            ("email", &format!("{sub}@example.test")),
            ("email_verified", "true"),
            ("name", "Ada Lovelace"),
            ("role", role),
            ("resource", AUDIENCE),
            ("alg", alg),
        ]);
        let response = self
            .http
            .post(format!("{}/token", self.issuer))
            .basic_auth("d2-tests", Some("d2-tests-secret"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.query().unwrap_or_default().to_owned())
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert!(status.is_success(), "token request: {body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// New signing keys from now on; the previous ones stay published.
    async fn rotate(&self) {
        let response = self
            .http
            .post(format!("{}/test/rotate", self.issuer))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }
}

impl Drop for RealProvider {
    fn drop(&mut self) {
        let _ = script(&self.dir, "stop");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_of_a_real_provider_verify_through_discovery_and_rotation() {
    let idp = RealProvider::start().await;
    let mut settings = OidcSettings::new(idp.issuer.clone(), AUDIENCE);
    settings.role_claim = Some("role".to_owned());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let provider = OidcProvider::connect(settings, Arc::clone(&clock))
        .await
        .unwrap();
    assert_eq!(provider.cached_keys(), Some(3));

    for (alg, role, cap) in [
        ("RS256", "admin", Role::Admin),
        ("ES256", "developer", Role::Developer),
        ("EdDSA", "superuser", Role::Member),
    ] {
        let token = idp.token("user-1", alg, role).await;
        let verified = provider
            .verify(&token)
            .await
            .unwrap_or_else(|error| panic!("{alg}: {error:?}"));
        let identity = verified.identity;
        assert_eq!(identity.issuer, idp.issuer);
        assert_eq!(identity.subject, "user-1");
        assert_eq!(identity.email.as_deref(), Some("user-1@example.test"));
        assert!(identity.email_verified);
        assert_eq!(identity.display_name.as_deref(), Some("Ada Lovelace"));
        assert_eq!(identity.role_cap, Some(cap), "{alg}");
        assert!(verified.expires_at > clock.now());
    }
    let before_rotation = idp.token("user-2", "ES256", "member").await;

    // New keys: a token of the new key is an unknown kid, fetched once, then verifies.
    idp.rotate().await;
    for alg in ["RS256", "ES256", "EdDSA"] {
        let token = idp.token("user-3", alg, "member").await;
        let verified = provider
            .verify(&token)
            .await
            .unwrap_or_else(|error| panic!("{alg} after rotation: {error:?}"));
        assert_eq!(verified.identity.subject, "user-3");
    }
    assert_eq!(
        provider.cached_keys(),
        Some(6),
        "new keys and the previous ones"
    );
    let old = provider.verify(&before_rotation).await.unwrap();
    assert_eq!(old.identity.subject, "user-2");

    // A token for another resource is not for D2.
    let other = OidcProvider::connect(
        OidcSettings::new(idp.issuer.clone(), "https://other.test"),
        clock,
    )
    .await
    .unwrap();
    assert_eq!(
        other.verify(&before_rotation).await,
        Err(d2_members::IdentityError::Invalid("wrong audience"))
    );
}
