//! `private_key_jwt` (RFC 7523) through the real server: an agent registered with its public
//! keys authenticates with assertions it signs, each accepted once, at the token endpoint
//! and beside it; expired, foreign, replayed and badly signed assertions are refused as
//! RFC 6749 errors, and nothing is issued for them.

use d2_kernel::Clock as _;
use josekit::jws::{ES256, JwsHeader, JwsSigner, RS256};
use josekit::jwt::JwtPayload;
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Reply, Tenant, TestApp};
use crate::oauth::{Client, agent, form, issuer, metadata_reply};

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// An agent's key pair: the public JWK it registers and a signer.
struct AgentKey {
    public: Value,
    signer: Box<dyn JwsSigner>,
    kid: String,
}

impl AgentKey {
    fn rsa(kid: &str) -> Self {
        let pair = RS256.generate_key_pair(2048).unwrap();
        let mut public = pair.to_jwk_public_key();
        public.set_key_id(kid);
        Self {
            public: serde_json::to_value(public.as_ref()).unwrap(),
            signer: Box::new(RS256.signer_from_jwk(&pair.to_jwk_private_key()).unwrap()),
            kid: kid.to_owned(),
        }
    }

    fn ec(kid: &str) -> Self {
        let pair = ES256.generate_key_pair().unwrap();
        let mut public = pair.to_jwk_public_key();
        public.set_key_id(kid);
        Self {
            public: serde_json::to_value(public.as_ref()).unwrap(),
            signer: Box::new(ES256.signer_from_jwk(&pair.to_jwk_private_key()).unwrap()),
            kid: kid.to_owned(),
        }
    }

    /// An assertion of `client_id` for `aud`, expiring `lifetime` seconds after the
    /// server's now, with `jti`.
    fn sign(&self, app: &TestApp, client_id: &str, aud: &str, jti: &str, lifetime: i64) -> String {
        let now = app.clock.now().timestamp();
        let mut payload = JwtPayload::new();
        for (name, value) in [
            ("iss", json!(client_id)),
            ("sub", json!(client_id)),
            ("aud", json!(aud)),
            ("jti", json!(jti)),
            ("iat", json!(now)),
            ("exp", json!(now + lifetime)),
        ] {
            payload.set_claim(name, Some(value)).unwrap();
        }
        let mut header = JwsHeader::new();
        header.set_token_type("JWT");
        header.set_key_id(&self.kid);
        josekit::jwt::encode_with_signer(&payload, &header, self.signer.as_ref()).unwrap()
    }
}

fn keyed_agent(keys: &[&AgentKey]) -> Value {
    json!({
        "name": "Signing agent",
        "scopes": ["reports.export"],
        "auth_method": "private_key_jwt",
        "jwks": {"keys": keys.iter().map(|key| key.public.clone()).collect::<Vec<_>>()},
    })
}

/// A token request authenticated by `assertion` alone.
async fn with_assertion(
    app: &TestApp,
    tenant: &Tenant,
    endpoint: &str,
    assertion: &str,
    extra: &[(&str, &str)],
) -> Reply {
    let mut fields = vec![
        ("client_assertion_type", ASSERTION_TYPE),
        ("client_assertion", assertion),
    ];
    fields.extend_from_slice(extra);
    form(app, tenant, endpoint, None, &fields).await
}

fn assert_refused(reply: &Reply, status: u16, error: &str) {
    assert_eq!(reply.status.as_u16(), status, "{}", reply.text);
    assert_eq!(reply.body["error"], error, "{}", reply.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_authenticates_with_each_signed_assertion_once() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let rsa = AgentKey::rsa("rsa-1");
    let ec = AgentKey::ec("ec-1");
    let client = agent(&app, &tenant, keyed_agent(&[&rsa, &ec])).await;
    let token_endpoint = format!("{}/token", issuer(&app, &tenant));
    let cc = ("grant_type", "client_credentials");

    // Discovery says so.
    let metadata = metadata_reply(&app, &tenant).await;
    let methods = &metadata.assert_status(200)["token_endpoint_auth_methods_supported"];
    assert!(
        methods
            .as_array()
            .unwrap()
            .contains(&json!("private_key_jwt"))
    );

    // Signed with either key, for the token endpoint or the issuer; client_id optional.
    let first = rsa.sign(&app, &client.id, &token_endpoint, "jti-1", 60);
    let issued = with_assertion(&app, &tenant, "token", &first, &[cc]).await;
    let access = issued.assert_status(200)["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let by_issuer = ec.sign(&app, &client.id, &issuer(&app, &tenant), "jti-2", 60);
    with_assertion(
        &app,
        &tenant,
        "token",
        &by_issuer,
        &[cc, ("client_id", &client.id)],
    )
    .await
    .assert_status(200);

    // The same assertion again is a replay.
    let replayed = with_assertion(&app, &tenant, "token", &first, &[cc]).await;
    assert_refused(&replayed, 401, "invalid_client");
    assert!(replayed.header("www-authenticate").is_some());

    // Introspection takes an assertion for its own URL.
    let introspect_url = format!("{}/introspect", issuer(&app, &tenant));
    let peek = rsa.sign(&app, &client.id, &introspect_url, "jti-3", 60);
    let introspected =
        with_assertion(&app, &tenant, "introspect", &peek, &[("token", &access)]).await;
    assert_eq!(introspected.assert_status(200)["active"], true);
    assert_eq!(introspected.body["client_id"], client.id.as_str());

    // The secret its activation showed does not authenticate it.
    assert_refused(
        &form(&app, &tenant, "token", Some(&client), &[cc]).await,
        401,
        "invalid_client",
    );
    let issued_before = issuances(&app, &tenant).await;
    assert_eq!(issued_before, 2);
}

/// The access tokens issued in the tenant, by its audit.
async fn issuances(app: &TestApp, tenant: &Tenant) -> usize {
    app.audit(tenant)
        .await
        .iter()
        .filter(|r| r["action"] == "oauth.token_issue")
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_assertions_are_refused_and_issue_nothing() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let other = app.bootstrap().await;
    let key = AgentKey::rsa("k1");
    let stranger_key = AgentKey::rsa("k1");
    let client = agent(&app, &tenant, keyed_agent(&[&key])).await;
    let stranger = agent(&app, &other, keyed_agent(&[&stranger_key])).await;
    let secret_agent = agent(
        &app,
        &tenant,
        json!({"name": "Secret agent", "scopes": ["reports.export"]}),
    )
    .await;
    let token_endpoint = format!("{}/token", issuer(&app, &tenant));
    let other_endpoint = format!("{}/token", issuer(&app, &other));
    let cc = ("grant_type", "client_credentials");

    let cases: Vec<(&str, String)> = vec![
        (
            "expired",
            key.sign(&app, &client.id, &token_endpoint, "e1", -5),
        ),
        (
            "living over an hour",
            key.sign(&app, &client.id, &token_endpoint, "e2", 7_200),
        ),
        (
            "for another account's issuer",
            key.sign(&app, &client.id, &other_endpoint, "e3", 60),
        ),
        (
            "for another server",
            key.sign(
                &app,
                &client.id,
                "https://elsewhere.example/token",
                "e4",
                60,
            ),
        ),
        (
            "signed by another key with the same kid",
            stranger_key.sign(&app, &client.id, &token_endpoint, "e5", 60),
        ),
        (
            "another account's agent at this issuer",
            stranger_key.sign(&app, &stranger.id, &token_endpoint, "e6", 60),
        ),
        (
            "an agent that authenticates by secret",
            key.sign(&app, &secret_agent.id, &token_endpoint, "e7", 60),
        ),
        ("not a JWT", "not.a.jwt".to_owned()),
        ("an unsigned JWT", {
            let signed = key.sign(&app, &client.id, &token_endpoint, "e8", 60);
            let mut parts: Vec<&str> = signed.split('.').collect();
            parts[0] = "eyJhbGciOiJub25lIn0";
            parts[2] = "";
            parts.join(".")
        }),
    ];
    for (case, assertion) in &cases {
        let reply = with_assertion(&app, &tenant, "token", assertion, &[cc]).await;
        assert_eq!(reply.status.as_u16(), 401, "{case}: {}", reply.text);
        assert_eq!(reply.body["error"], "invalid_client", "{case}");
    }

    // Malformed requests: the type missing or wrong, an assertion beside a secret, a
    // client_id that is not the assertion's subject.
    let good = key.sign(&app, &client.id, &token_endpoint, "g1", 60);
    let assertion = ("client_assertion", good.as_str());
    let jwt_type = ("client_assertion_type", ASSERTION_TYPE);
    type Case<'a> = (&'a str, Option<&'a Client>, Vec<(&'a str, &'a str)>);
    let malformed: [Case<'_>; 5] = [
        ("no type", None, vec![cc, assertion]),
        (
            "another type",
            None,
            vec![cc, assertion, ("client_assertion_type", "urn:example:saml")],
        ),
        ("a type alone", None, vec![cc, jwt_type]),
        (
            "beside a secret",
            Some(&secret_agent),
            vec![cc, assertion, jwt_type],
        ),
        ("twice", None, vec![cc, assertion, assertion, jwt_type]),
    ];
    for (case, basic, fields) in &malformed {
        let reply = form(&app, &tenant, "token", *basic, fields).await;
        assert_eq!(reply.status.as_u16(), 400, "{case}: {}", reply.text);
        assert_eq!(reply.body["error"], "invalid_request", "{case}");
    }
    let other_client_id = with_assertion(
        &app,
        &tenant,
        "token",
        &good,
        &[cc, ("client_id", &secret_agent.id)],
    )
    .await;
    assert_refused(&other_client_id, 401, "invalid_client");
    assert_eq!(issuances(&app, &tenant).await, 0, "nothing issued");

    // The refusals spent nothing: the good assertion still works once.
    with_assertion(&app, &tenant, "token", &good, &[cc])
        .await
        .assert_status(200);
    // A disabled agent's assertions are refused.
    let mut disabled = keyed_agent(&[&key]);
    disabled["state"] = json!("disabled");
    app.send(
        app.request(
            Method::PUT,
            &format!("/v1/agents/{}", client.id),
            Some(&tenant.token),
        )
        .json(&disabled),
    )
    .await
    .assert_status(200);
    let late = key.sign(&app, &client.id, &token_endpoint, "g2", 60);
    assert_refused(
        &with_assertion(&app, &tenant, "token", &late, &[cc]).await,
        401,
        "invalid_client",
    );
}
