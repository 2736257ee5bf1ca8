//! DPoP (RFC 9449) through the real server: an agent proves a key with each token request
//! and its tokens are bound to it (`token_type: DPoP`, `cnf.jkt` in the token and in
//! introspection); a bound refresh token is spent only with a proof of the same key; proofs
//! that are replayed, for another method or URL, stale, badly signed or carrying a private
//! key are refused with `invalid_dpop_proof` and nothing issued.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use josekit::jwk::Jwk;
use josekit::jws::{ES256, JwsHeader};
use josekit::jwt::{self, JwtPayload};
use reqwest::Method;
use serde_json::{Value, json};

use crate::authorize::claims_of;
use crate::delegations::audited;
use crate::harness::{Reply, Tenant, TestApp};
use crate::oauth::{Client, agent, issuer, metadata_reply};
use crate::token_exchange::introspect;

/// A key pair an agent proves.
struct Key {
    private: Jwk,
    public: Jwk,
}

impl Key {
    fn new() -> Self {
        let private = Jwk::generate_ec_key(josekit::jwk::alg::ec::EcCurve::P256).unwrap();
        let public = private.to_public_key().unwrap();
        Self { private, public }
    }

    /// RFC 7638 thumbprint of the public key.
    fn thumbprint(&self) -> String {
        let text = serde_json::to_string(&json!({
            "crv": self.public.parameter("crv").unwrap(),
            "kty": "EC",
            "x": self.public.parameter("x").unwrap(),
            "y": self.public.parameter("y").unwrap(),
        }))
        .unwrap();
        URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()))
    }

    /// A proof for `method` at `url`, with `jti`, `iat` seconds from now, carrying `jwk`.
    fn proof_with(&self, method: &str, url: &str, jti: &str, iat_offset: i64, jwk: &Jwk) -> String {
        let mut header = JwsHeader::new();
        header.set_token_type("dpop+jwt");
        header
            .set_claim("jwk", Some(Value::Object(jwk.as_ref().clone())))
            .unwrap();
        let mut payload = JwtPayload::new();
        payload.set_claim("htm", Some(json!(method))).unwrap();
        payload.set_claim("htu", Some(json!(url))).unwrap();
        payload.set_claim("jti", Some(json!(jti))).unwrap();
        let iat = chrono::Utc::now().timestamp() + iat_offset;
        payload.set_claim("iat", Some(json!(iat))).unwrap();
        let signer = ES256.signer_from_jwk(&self.private).unwrap();
        jwt::encode_with_signer(&payload, &header, &signer).unwrap()
    }

    fn proof(&self, url: &str) -> String {
        let jti = uuid::Uuid::new_v4().to_string();
        self.proof_with("POST", url, &jti, 0, &self.public)
    }
}

async fn token_with(
    app: &TestApp,
    tenant: &Tenant,
    client: &Client,
    proof: Option<&str>,
    fields: &[(&str, &str)],
) -> Reply {
    let mut request = app
        .request(
            Method::POST,
            &format!("/oauth/{}/token", tenant.account_id),
            None,
        )
        .basic_auth(&client.id, Some(&client.secret))
        .form(fields);
    if let Some(proof) = proof {
        request = request.header("DPoP", proof);
    }
    app.send(request).await
}

/// A server, an account, an agent of it and its token endpoint's URL (what proofs name).
async fn setup() -> (TestApp, Tenant, Client, String) {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let client = agent(
        &app,
        &tenant,
        json!({"name": "a", "scopes": ["tools:read"]}),
    )
    .await;
    let url = format!("{}/token", issuer(&app, &tenant));
    (app, tenant, client, url)
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_bound_to_the_key_an_agent_proves_and_refresh_only_with_it() {
    let (app, tenant, client, url) = setup().await;
    let key = Key::new();
    let metadata = metadata_reply(&app, &tenant).await;
    assert_eq!(
        metadata.assert_status(200)["dpop_signing_alg_values_supported"],
        json!(["ES256", "RS256", "EdDSA"])
    );

    let proof = key.proof(&url);
    let fields = [("grant_type", "client_credentials")];
    let reply = token_with(&app, &tenant, &client, Some(&proof), &fields).await;
    let body = reply.assert_status(200).clone();
    assert_eq!(body["token_type"], "DPoP");
    let access = body["access_token"].as_str().unwrap();
    assert_eq!(claims_of(access)["cnf"], json!({ "jkt": key.thumbprint() }));
    let seen = introspect(&app, &tenant, &client, access).await;
    assert_eq!(seen["cnf"], json!({ "jkt": key.thumbprint() }));

    // The same proof again is a replay: refused, nothing issued.
    let replayed = token_with(&app, &tenant, &client, Some(&proof), &fields).await;
    assert_eq!(replayed.status.as_u16(), 400, "{}", replayed.text);
    assert_eq!(replayed.body["error"], "invalid_dpop_proof");

    // The bound refresh token: not without a proof, not with another key's, yes with one
    // of the same key (and the new tokens stay bound).
    let refresh = body["refresh_token"].as_str().unwrap();
    let refresh_fields = [("grant_type", "refresh_token"), ("refresh_token", refresh)];
    let other = Key::new();
    for (why, proof) in [("no proof", None), ("another key", Some(other.proof(&url)))] {
        let reply = token_with(&app, &tenant, &client, proof.as_deref(), &refresh_fields).await;
        assert_eq!(reply.status.as_u16(), 400, "{why}: {}", reply.text);
        assert_eq!(reply.body["error"], "invalid_dpop_proof", "{why}");
    }
    let refreshed = token_with(
        &app,
        &tenant,
        &client,
        Some(&key.proof(&url)),
        &refresh_fields,
    )
    .await;
    let refreshed = refreshed.assert_status(200);
    assert_eq!(refreshed["token_type"], "DPoP");
    let again = refreshed["access_token"].as_str().unwrap();
    assert_eq!(claims_of(again)["cnf"], json!({ "jkt": key.thumbprint() }));

    // Without a proof, a bearer token as ever.
    let bearer = token_with(&app, &tenant, &client, None, &fields).await;
    let bearer = bearer.assert_status(200);
    assert_eq!(bearer["token_type"], "Bearer");
    assert!(claims_of(bearer["access_token"].as_str().unwrap())["cnf"].is_null());
}

#[tokio::test(flavor = "multi_thread")]
async fn proofs_for_another_request_or_not_well_made_are_refused() {
    let (app, tenant, client, url) = setup().await;
    let key = Key::new();
    let stranger = Key::new();
    let jti = || uuid::Uuid::new_v4().to_string();
    let signed_by_another = {
        // Signed with one key, carrying another's public key.
        let mut header = JwsHeader::new();
        header.set_token_type("dpop+jwt");
        header
            .set_claim("jwk", Some(Value::Object(stranger.public.as_ref().clone())))
            .unwrap();
        let mut payload = JwtPayload::new();
        payload.set_claim("htm", Some(json!("POST"))).unwrap();
        payload.set_claim("htu", Some(json!(url))).unwrap();
        payload.set_claim("jti", Some(json!(jti()))).unwrap();
        payload
            .set_claim("iat", Some(json!(chrono::Utc::now().timestamp())))
            .unwrap();
        jwt::encode_with_signer(
            &payload,
            &header,
            &ES256.signer_from_jwk(&key.private).unwrap(),
        )
        .unwrap()
    };
    let other_issuer = url.replace(&tenant.account_id, &uuid::Uuid::new_v4().to_string());
    for (why, proof) in [
        (
            "another method",
            key.proof_with("GET", &url, &jti(), 0, &key.public),
        ),
        (
            "another URL",
            key.proof_with("POST", &other_issuer, &jti(), 0, &key.public),
        ),
        (
            "an old proof",
            key.proof_with("POST", &url, &jti(), -600, &key.public),
        ),
        (
            "a private key in the header",
            key.proof_with("POST", &url, &jti(), 0, &key.private),
        ),
        ("a signature by another key", signed_by_another),
        ("not a JWT", "not-a-proof".to_owned()),
    ] {
        let reply = token_with(
            &app,
            &tenant,
            &client,
            Some(&proof),
            &[("grant_type", "client_credentials")],
        )
        .await;
        assert_eq!(reply.status.as_u16(), 400, "{why}: {}", reply.text);
        assert_eq!(
            reply.body["error"], "invalid_dpop_proof",
            "{why}: {}",
            reply.text
        );
    }
    assert_eq!(audited(&app, &tenant, "oauth.token_issue").await, 0);
}
