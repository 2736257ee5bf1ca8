//! Each account's authorization server for its agents, through the real server: agents'
//! registration and activation, discovery, the token endpoint with each client
//! authentication, access tokens verified against the JWKS alone, introspection, refresh
//! rotation with its replay grace and reuse detection, revocation, and bad input answered
//! as RFC 6749 JSON.

use base64::Engine as _;
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Reply, Tenant, TestApp};

/// An active agent: its client id and secret.
pub(crate) struct Client {
    pub id: String,
    pub secret: String,
}

pub(crate) async fn register(app: &TestApp, tenant: &Tenant, spec: Value) -> Value {
    let reply = app.post("/v1/agents/register", &tenant.token, spec).await;
    reply.assert_status(201).clone()
}

/// Registers and activates an agent of `spec`.
pub(crate) async fn agent(app: &TestApp, tenant: &Tenant, spec: Value) -> Client {
    let registered = register(app, tenant, spec).await;
    let token = registered["registration_token"].as_str().unwrap();
    let reply = app
        .send(
            app.request(Method::POST, "/v1/agents/activate", None)
                .json(&json!({ "registration_token": token })),
        )
        .await;
    let body = reply.assert_status(200);
    Client {
        id: body["client_id"].as_str().unwrap().to_owned(),
        secret: body["client_secret"].as_str().unwrap().to_owned(),
    }
}

/// The account's authorization server metadata (RFC 8414), as answered.
pub(crate) async fn metadata_reply(app: &TestApp, tenant: &Tenant) -> Reply {
    let path = format!(
        "/.well-known/oauth-authorization-server/oauth/{}",
        tenant.account_id
    );
    app.get(&path, "").await
}

pub(crate) fn issuer(app: &TestApp, tenant: &Tenant) -> String {
    app.url(&format!("/oauth/{}", tenant.account_id))
}

/// A form POST to an OAuth endpoint of the tenant, with HTTP Basic when `basic` is given.
/// A `client_credentials` token request of `client`, with nothing else asked.
pub(crate) async fn client_credentials(app: &TestApp, tenant: &Tenant, client: &Client) -> Reply {
    form(
        app,
        tenant,
        "token",
        Some(client),
        &[("grant_type", "client_credentials")],
    )
    .await
}

pub(crate) async fn form(
    app: &TestApp,
    tenant: &Tenant,
    endpoint: &str,
    basic: Option<&Client>,
    fields: &[(&str, &str)],
) -> Reply {
    let mut request = app.request(
        Method::POST,
        &format!("/oauth/{}/{endpoint}", tenant.account_id),
        None,
    );
    if let Some(client) = basic {
        request = request.basic_auth(&client.id, Some(&client.secret));
    }
    app.send(request.form(fields)).await
}

fn assert_oauth_error(reply: &Reply, status: u16, error: &str) {
    assert_eq!(reply.status.as_u16(), status, "{}", reply.text);
    assert_eq!(reply.body["error"], error, "{}", reply.text);
    assert!(
        reply.body["error_description"].is_string(),
        "{}",
        reply.text
    );
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert!(
        reply
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        "RFC 6749 JSON, never a problem document"
    );
}

/// The key published at `jwks_uri` that the `kid` of the JWS `jws` names, as JSON and as a
/// key.
pub(crate) async fn published_key(jwks_uri: &str, jws: &str) -> (Value, josekit::jwk::Jwk) {
    let jwks: Value = reqwest::get(jwks_uri).await.unwrap().json().await.unwrap();
    let header = josekit::jwt::decode_header(jws).unwrap();
    let kid = header.claim("kid").unwrap().as_str().unwrap();
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid)
        .expect("the signing key is published")
        .clone();
    let jwk = josekit::jwk::Jwk::from_bytes(serde_json::to_vec(&key).unwrap()).unwrap();
    (key, jwk)
}

/// The claims of `jwt`, an `at+jwt` signed with `alg` (RS256 or ES256), once its signature
/// checks against the keys published at `jwks_uri`, and the key that verified it.
pub(crate) async fn verified_claims(jwks_uri: &str, jwt: &str, alg: &str) -> (Value, Value) {
    let header = josekit::jwt::decode_header(jwt).unwrap();
    assert_eq!(header.claim("typ"), Some(&json!("at+jwt")));
    assert_eq!(header.claim("alg"), Some(&json!(alg)));
    let (key, jwk) = published_key(jwks_uri, jwt).await;
    let (payload, _) = match alg {
        "RS256" => josekit::jwt::decode_with_verifier(
            jwt,
            &josekit::jws::RS256.verifier_from_jwk(&jwk).unwrap(),
        ),
        _ => josekit::jwt::decode_with_verifier(
            jwt,
            &josekit::jws::ES256.verifier_from_jwk(&jwk).unwrap(),
        ),
    }
    .unwrap();
    (serde_json::from_str(&payload.to_string()).unwrap(), key)
}

pub(crate) fn reports_agent() -> Value {
    json!({
        "name": "Report filer",
        "scopes": ["reports.export", "tools:read"],
        "resources": ["https://api.example/", "https://files.example/"],
        "attributes": {"team": "finance"},
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_registers_activates_and_gets_tokens_a_resource_server_verifies_offline() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;

    let registered = register(&app, &tenant, reports_agent()).await;
    assert_eq!(registered["state"], "pending");
    assert_eq!(registered["auth_method"], "client_secret_basic");
    assert_eq!(registered["refresh_token_seconds"], 2_592_000);
    let registration = registered["registration_token"].as_str().unwrap();
    assert!(registration.starts_with("d2reg_"));
    let activate = |token: &str| {
        app.request(Method::POST, "/v1/agents/activate", None)
            .json(&json!({ "registration_token": token }))
    };
    let activated = app.send(activate(registration)).await;
    let body = activated.assert_status(200);
    assert_eq!(body["state"], "active");
    let client = Client {
        id: body["client_id"].as_str().unwrap().to_owned(),
        secret: body["client_secret"].as_str().unwrap().to_owned(),
    };
    assert!(client.secret.starts_with("d2cs_"));
    app.send(activate(registration))
        .await
        .assert_problem(404, "registration_not_found");
    let listed = app.get("/v1/agents", &tenant.token).await;
    assert_eq!(listed.assert_status(200).as_array().unwrap().len(), 1);
    assert!(!listed.text.contains("d2cs_"), "never a secret in a list");

    // Discovery, at both well-known places.
    let issuer = issuer(&app, &tenant);
    let rfc8414 = metadata_reply(&app, &tenant).await;
    let metadata = rfc8414.assert_status(200).clone();
    let openid = app
        .get(
            &format!(
                "/oauth/{}/.well-known/openid-configuration",
                tenant.account_id
            ),
            "",
        )
        .await;
    assert_eq!(openid.assert_status(200)["issuer"], issuer);
    assert_eq!(metadata["issuer"], issuer);
    assert_eq!(metadata["token_endpoint"], format!("{issuer}/token"));
    assert_eq!(
        metadata["code_challenge_methods_supported"],
        json!(["S256"])
    );
    assert_eq!(
        metadata["grant_types_supported"],
        json!([
            "client_credentials",
            "authorization_code",
            "refresh_token",
            "urn:ietf:params:oauth:grant-type:token-exchange"
        ])
    );
    assert_eq!(
        metadata["authorization_endpoint"],
        format!("{issuer}/authorize")
    );
    assert_eq!(metadata["response_types_supported"], json!(["code"]));
    assert_eq!(
        metadata["authorization_response_iss_parameter_supported"],
        true
    );

    // Client credentials, HTTP Basic.
    let reply = form(
        &app,
        &tenant,
        "token",
        Some(&client),
        &[
            ("grant_type", "client_credentials"),
            ("scope", "tools:read"),
            ("resource", "https://api.example/"),
            ("task_id", "task-42"),
            ("parent_task_id", "task-41"),
        ],
    )
    .await;
    let issued = reply.assert_status(200).clone();
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(issued["token_type"], "Bearer");
    assert_eq!(issued["scope"], "tools:read");
    assert_eq!(issued["task_id"], "task-42");
    let access = issued["access_token"].as_str().unwrap();
    let (claims, _) =
        verified_claims(metadata["jwks_uri"].as_str().unwrap(), access, "RS256").await;
    assert_eq!(claims["iss"], issuer);
    assert_eq!(claims["sub"], client.id);
    assert_eq!(claims["client_id"], client.id);
    assert_eq!(claims["aud"], "https://api.example/");
    assert_eq!(claims["scope"], "tools:read");
    assert_eq!(claims["task_id"], "task-42");
    assert_eq!(claims["parent_task_id"], "task-41");
    assert_eq!(claims["jti"], issued["token_id"]);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        3600
    );

    // Without scope or resource: everything the agent may have, for all its resources.
    let everything = client_credentials(&app, &tenant, &client).await;
    let everything = everything.assert_status(200).clone();
    assert_eq!(everything["scope"], "reports.export tools:read");
    assert!(everything["task_id"].as_str().unwrap().starts_with("task_"));

    // Introspection by an agent of the account, and the agent's own view.
    let introspected = form(
        &app,
        &tenant,
        "introspect",
        Some(&client),
        &[("token", access)],
    )
    .await;
    let introspected = introspected.assert_status(200).clone();
    assert_eq!(introspected["active"], true);
    assert_eq!(introspected["client_id"], client.id);
    assert_eq!(introspected["scope"], "tools:read");
    assert_eq!(introspected["task_id"], "task-42");
    assert_eq!(introspected["parent_task_id"], "task-41");
    assert_eq!(introspected["iss"], issuer);
    assert_eq!(introspected["token_type"], "access_token");
    let me = app.get("/v1/agents/me", access).await;
    assert_eq!(me.assert_status(200)["client_id"], client.id);
    assert_eq!(me.body["task_id"], "task-42");
    let info = app
        .get(&format!("/oauth/{}/agentinfo", tenant.account_id), access)
        .await;
    assert_eq!(info.assert_status(200)["name"], "Report filer");

    // A token altered in any way is not the token issued.
    let mut parts: Vec<String> = access.split('.').map(str::to_owned).collect();
    let mut forged: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&parts[1])
            .unwrap(),
    )
    .unwrap();
    forged["scope"] = json!("reports.export tools:read");
    parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&forged).unwrap());
    let forged = parts.join(".");
    let answer = form(
        &app,
        &tenant,
        "introspect",
        Some(&client),
        &[("token", &forged)],
    )
    .await;
    assert_eq!(answer.assert_status(200), &json!({"active": false}));
    app.get("/v1/agents/me", &forged)
        .await
        .assert_problem(401, "invalid_token");

    // Revocation (RFC 7009): the token stops working; unknown tokens are answered 200.
    let revoked = form(&app, &tenant, "revoke", Some(&client), &[("token", access)]).await;
    revoked.assert_status(200);
    let answer = form(
        &app,
        &tenant,
        "introspect",
        Some(&client),
        &[("token", access)],
    )
    .await;
    crate::harness::assert_revoked(answer.assert_status(200), "client");
    form(
        &app,
        &tenant,
        "revoke",
        Some(&client),
        &[("token", "not-a-token")],
    )
    .await
    .assert_status(200);

    let actions: Vec<String> = app
        .audit(&tenant)
        .await
        .iter()
        .map(|r| r["action"].as_str().unwrap().to_owned())
        .collect();
    for action in [
        "agent.register",
        "agent.activate",
        "oauth.token_issue",
        "oauth.token_revoke",
    ] {
        assert!(actions.iter().any(|a| a == action), "{action}: {actions:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_tokens_rotate_a_retry_gets_the_same_answer_and_a_reuse_revokes_the_family() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let client = agent(
        &app,
        &tenant,
        json!({"name": "Poster", "scopes": ["a", "b"], "auth_method": "client_secret_post"}),
    )
    .await;
    let post = |fields: Vec<(&'static str, String)>| {
        let mut all = vec![
            ("client_id", client.id.clone()),
            ("client_secret", client.secret.clone()),
        ];
        all.extend(fields);
        let app = &app;
        let tenant = &tenant;
        async move {
            let fields: Vec<(&str, &str)> = all.iter().map(|(k, v)| (*k, v.as_str())).collect();
            form(app, tenant, "token", None, &fields).await
        }
    };
    let first = post(vec![("grant_type", "client_credentials".into())]).await;
    let first = first.assert_status(200).clone();
    let refresh = first["refresh_token"].as_str().unwrap().to_owned();
    assert!(refresh.starts_with("d2rt_"));

    // A narrower scope on refresh; a wider one is refused.
    let wider = post(vec![
        ("grant_type", "refresh_token".into()),
        ("refresh_token", refresh.clone()),
        ("scope", "a c".into()),
    ])
    .await;
    assert_oauth_error(&wider, 400, "invalid_scope");
    let second = post(vec![
        ("grant_type", "refresh_token".into()),
        ("refresh_token", refresh.clone()),
        ("scope", "a".into()),
    ])
    .await;
    let second = second.assert_status(200).clone();
    assert_eq!(second["scope"], "a");
    assert_eq!(
        second["task_id"], first["task_id"],
        "a refresh keeps its task"
    );
    let next_refresh = second["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(next_refresh, refresh);
    let introspected = form(
        &app,
        &tenant,
        "introspect",
        None,
        &[
            ("client_id", &client.id),
            ("client_secret", &client.secret),
            ("token", second["access_token"].as_str().unwrap()),
        ],
    )
    .await;
    let introspected = introspected.assert_status(200).clone();
    assert_eq!(introspected["active"], true);
    assert_eq!(introspected["grant_type"], "refresh_token");
    assert!(introspected["parent_token_id"].is_string());

    // A retry of the same refresh within the grace gets the very same answer.
    let retry = post(vec![
        ("grant_type", "refresh_token".into()),
        ("refresh_token", refresh.clone()),
        ("scope", "a".into()),
    ])
    .await;
    assert_eq!(retry.assert_status(200), &second);

    // After the grace, presenting it again is a reuse: the whole family is revoked.
    app.advance(11);
    let reuse = post(vec![
        ("grant_type", "refresh_token".into()),
        ("refresh_token", refresh.clone()),
    ])
    .await;
    assert_oauth_error(&reuse, 400, "invalid_grant");
    let after = post(vec![
        ("grant_type", "refresh_token".into()),
        ("refresh_token", next_refresh.clone()),
    ])
    .await;
    assert_oauth_error(&after, 400, "invalid_grant");
    for token in [
        first["access_token"].as_str().unwrap(),
        second["access_token"].as_str().unwrap(),
        &next_refresh,
    ] {
        let answer = form(
            &app,
            &tenant,
            "introspect",
            None,
            &[
                ("client_id", &client.id),
                ("client_secret", &client.secret),
                ("token", token),
            ],
        )
        .await;
        crate::harness::assert_revoked(answer.assert_status(200), "reuse");
    }
    let audit = app.audit(&tenant).await;
    let reuse = audit
        .iter()
        .find(|r| r["action"] == "oauth.refresh_reuse")
        .expect("the reuse is audited");
    assert_eq!(reuse["metadata"]["revoked"].as_array().unwrap().len(), 4);
    assert_eq!(
        audit
            .iter()
            .filter(|r| r["action"] == "oauth.token_refresh")
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_token_requests_are_rfc_6749_errors_and_issue_nothing() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let other = app.bootstrap().await;
    let client = agent(&app, &tenant, reports_agent()).await;
    let stranger = agent(&app, &other, reports_agent()).await;
    let cc = ("grant_type", "client_credentials");

    assert_oauth_error(
        &form(&app, &tenant, "token", Some(&client), &[]).await,
        400,
        "invalid_request",
    );
    assert_oauth_error(
        &form(
            &app,
            &tenant,
            "token",
            Some(&client),
            &[("grant_type", "password")],
        )
        .await,
        400,
        "unsupported_grant_type",
    );
    assert_oauth_error(
        &form(
            &app,
            &tenant,
            "token",
            Some(&client),
            &[cc, ("scope", "a"), ("scope", "b")],
        )
        .await,
        400,
        "invalid_request",
    );
    assert_oauth_error(
        &form(
            &app,
            &tenant,
            "token",
            Some(&client),
            &[cc, ("scope", "admin")],
        )
        .await,
        400,
        "invalid_scope",
    );
    assert_oauth_error(
        &form(
            &app,
            &tenant,
            "token",
            Some(&client),
            &[cc, ("resource", "https://evil.example/")],
        )
        .await,
        400,
        "invalid_target",
    );
    assert_oauth_error(
        &form(
            &app,
            &tenant,
            "token",
            Some(&client),
            &[cc, ("resource", "not a uri")],
        )
        .await,
        400,
        "invalid_request",
    );
    assert_oauth_error(
        &form(
            &app,
            &tenant,
            "token",
            Some(&client),
            &[cc, ("task_id", "spaces are not ids")],
        )
        .await,
        400,
        "invalid_request",
    );
    assert_oauth_error(
        &form(
            &app,
            &tenant,
            "token",
            Some(&client),
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", "d2rt_nonsense"),
            ],
        )
        .await,
        400,
        "invalid_grant",
    );
    // No client, a wrong secret, an unknown client, another account's agent.
    let unauthenticated = form(&app, &tenant, "token", None, &[cc]).await;
    assert_oauth_error(&unauthenticated, 401, "invalid_client");
    assert!(
        unauthenticated
            .header("www-authenticate")
            .is_some_and(|v| v.starts_with("Basic"))
    );
    let wrong = Client {
        id: client.id.clone(),
        secret: stranger.secret.clone(),
    };
    assert_oauth_error(
        &form(&app, &tenant, "token", Some(&wrong), &[cc]).await,
        401,
        "invalid_client",
    );
    let unknown = Client {
        id: uuid::Uuid::new_v4().to_string(),
        secret: client.secret.clone(),
    };
    assert_oauth_error(
        &form(&app, &tenant, "token", Some(&unknown), &[cc]).await,
        401,
        "invalid_client",
    );
    assert_oauth_error(
        &form(&app, &tenant, "token", Some(&stranger), &[cc]).await,
        401,
        "invalid_client",
    );
    // The agent authenticates by Basic only; both ways at once is malformed.
    let posted = form(
        &app,
        &tenant,
        "token",
        None,
        &[
            cc,
            ("client_id", &client.id),
            ("client_secret", &client.secret),
        ],
    )
    .await;
    assert_oauth_error(&posted, 401, "invalid_client");
    let both = form(
        &app,
        &tenant,
        "token",
        Some(&client),
        &[
            cc,
            ("client_id", &client.id),
            ("client_secret", &client.secret),
        ],
    )
    .await;
    assert_oauth_error(&both, 400, "invalid_request");
    // A JSON body is not a form.
    let json_body = app
        .send(
            app.request(
                Method::POST,
                &format!("/oauth/{}/token", tenant.account_id),
                None,
            )
            .basic_auth(&client.id, Some(&client.secret))
            .json(&json!({"grant_type": "client_credentials"})),
        )
        .await;
    assert_oauth_error(&json_body, 400, "invalid_request");

    let audit = app.audit(&tenant).await;
    assert!(
        !audit.iter().any(|r| r["action"] == "oauth.token_issue"),
        "nothing issued"
    );
    assert!(audit.iter().any(|r| r["action"] == "oauth.token_deny"));

    // The stranger's agent learns nothing of this account's tokens.
    let mine = form(&app, &tenant, "token", Some(&client), &[cc]).await;
    let access = mine.assert_status(200)["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let peek = form(
        &app,
        &other,
        "introspect",
        Some(&stranger),
        &[("token", &access)],
    )
    .await;
    assert_eq!(peek.assert_status(200), &json!({"active": false}));
    form(
        &app,
        &other,
        "revoke",
        Some(&stranger),
        &[("token", &access)],
    )
    .await
    .assert_status(200);
    let still = form(
        &app,
        &tenant,
        "introspect",
        Some(&client),
        &[("token", &access)],
    )
    .await;
    assert_eq!(
        still.assert_status(200)["active"],
        true,
        "not revoked by a stranger"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_are_managed_by_their_account_only_and_deleting_one_ends_its_tokens() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let other = app.bootstrap().await;
    let client = agent(&app, &tenant, reports_agent()).await;
    let path = format!("/v1/agents/{}", client.id);

    // Another account's admin sees and changes nothing.
    app.get(&path, &other.token)
        .await
        .assert_problem(404, "agent_not_found");
    let update = json!({"name": "Renamed", "scopes": ["tools:read"]});
    app.send(
        app.request(Method::PUT, &path, Some(&other.token))
            .json(&update),
    )
    .await
    .assert_problem(404, "agent_not_found");
    app.send(app.request(
        Method::POST,
        &format!("{path}/rotate-secret"),
        Some(&other.token),
    ))
    .await
    .assert_problem(404, "agent_not_found");
    app.delete(&path, &other.token)
        .await
        .assert_problem(404, "agent_not_found");
    let listed = app.get("/v1/agents", &other.token).await;
    assert_eq!(listed.assert_status(200), &json!([]));

    // Bad specs are refused, nothing written.
    for bad in [
        json!({"name": ""}),
        json!({"name": "x", "scopes": ["has space"]}),
        json!({"name": "x", "redirect_uris": ["http://example.com/cb"]}),
        json!({"name": "x", "resources": ["https://api.example/#frag"]}),
        json!({"name": "x", "access_token_seconds": 10}),
        json!({"name": "x", "auth_method": "private_key_jwt"}),
        json!({"name": "x", "unknown": 1}),
    ] {
        app.post("/v1/agents/register", &tenant.token, bad.clone())
            .await
            .assert_problem(
                400,
                if bad.get("unknown").is_some() {
                    "invalid_body"
                } else {
                    "invalid_agent"
                },
            );
    }
    assert_eq!(
        app.get("/v1/agents", &tenant.token)
            .await
            .assert_status(200)
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Rotation: both secrets work during the grace.
    let rotated = app
        .send(app.request(
            Method::POST,
            &format!("{path}/rotate-secret"),
            Some(&tenant.token),
        ))
        .await;
    let rotated = rotated.assert_status(200).clone();
    let new = Client {
        id: client.id.clone(),
        secret: rotated["client_secret"].as_str().unwrap().to_owned(),
    };
    for credentials in [&client, &new] {
        form(
            &app,
            &tenant,
            "token",
            Some(credentials),
            &[("grant_type", "client_credentials")],
        )
        .await
        .assert_status(200);
    }

    // Disabled, it gets no tokens and its tokens stop working; enabled again, they work.
    let issued = form(
        &app,
        &tenant,
        "token",
        Some(&new),
        &[("grant_type", "client_credentials")],
    )
    .await;
    let access = issued.assert_status(200)["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut disabled = reports_agent();
    disabled["state"] = json!("disabled");
    app.send(
        app.request(Method::PUT, &path, Some(&tenant.token))
            .json(&disabled),
    )
    .await
    .assert_status(200);
    assert_oauth_error(
        &form(
            &app,
            &tenant,
            "token",
            Some(&new),
            &[("grant_type", "client_credentials")],
        )
        .await,
        401,
        "invalid_client",
    );
    app.get("/v1/agents/me", &access)
        .await
        .assert_problem(401, "invalid_token");

    // Deleted: gone, and so are its tokens.
    let witness = agent(&app, &tenant, reports_agent()).await;
    let mut enabled = reports_agent();
    enabled["state"] = json!("active");
    app.send(
        app.request(Method::PUT, &path, Some(&tenant.token))
            .json(&enabled),
    )
    .await
    .assert_status(200);
    app.get("/v1/agents/me", &access).await.assert_status(200);
    app.delete(&path, &tenant.token).await.assert_status(204);
    app.get(&path, &tenant.token)
        .await
        .assert_problem(404, "agent_not_found");
    let answer = form(
        &app,
        &tenant,
        "introspect",
        Some(&witness),
        &[("token", &access)],
    )
    .await;
    assert_eq!(answer.assert_status(200), &json!({"active": false}));
    assert_oauth_error(
        &form(
            &app,
            &tenant,
            "token",
            Some(&new),
            &[("grant_type", "client_credentials")],
        )
        .await,
        401,
        "invalid_client",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn access_tokens_are_signed_es256_when_configured_and_bundles_stay_rs256() {
    let app = TestApp::spawn_with(&[("D2__OAUTH__SIGNING_ALGORITHM", "ES256")]).await;
    let tenant = app.bootstrap().await;
    let client = agent(&app, &tenant, reports_agent()).await;
    let metadata = metadata_reply(&app, &tenant).await;
    let metadata = metadata.assert_status(200).clone();
    assert_eq!(
        metadata["access_token_signing_alg_values_supported"],
        json!(["ES256"])
    );
    let issued = client_credentials(&app, &tenant, &client).await;
    let access = issued.assert_status(200)["access_token"]
        .as_str()
        .unwrap()
        .to_owned();

    // A resource server: the jwks_uri holds the EC key that verifies the token.
    let (claims, key) =
        verified_claims(metadata["jwks_uri"].as_str().unwrap(), &access, "ES256").await;
    assert_eq!(
        (key["kty"].as_str(), key["crv"].as_str()),
        (Some("EC"), Some("P-256"))
    );
    assert_eq!(claims["sub"], client.id.as_str());
    let kid = key["kid"].as_str().unwrap();
    let introspected = form(
        &app,
        &tenant,
        "introspect",
        Some(&client),
        &[("token", &access)],
    )
    .await;
    assert_eq!(introspected.assert_status(200)["active"], true);

    // The bundles' JWKS (what SDKs verify policies with) holds RSA keys only.
    let bundles = app.get("/.well-known/jwks.json", &tenant.token).await;
    let kinds: Vec<&str> = bundles.assert_status(200)["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kty"].as_str().unwrap())
        .collect();
    assert!(kinds.iter().all(|kty| *kty == "RSA"), "{kinds:?}");
    assert!(!bundles.text.contains(kid));

    // A rotation of the account's keys replaces the EC key too: new tokens carry the new
    // key, the one issued before still verifies at the jwks_uri during the grace period.
    let rotated = app
        .post("/v1/jwks/rotate", &tenant.token, Value::Null)
        .await;
    let token_key = rotated.assert_status(201)["access_token_key"].clone();
    assert_eq!(token_key["previous_key_id"], kid);
    assert_eq!(token_key["algorithm"], "ES256");
    let new_kid = token_key["new_key_id"].as_str().unwrap();
    assert_ne!(new_kid, kid);
    let reissued = client_credentials(&app, &tenant, &client).await;
    let (_, new_key) = verified_claims(
        metadata["jwks_uri"].as_str().unwrap(),
        reissued.assert_status(200)["access_token"]
            .as_str()
            .unwrap(),
        "ES256",
    )
    .await;
    assert_eq!(new_key["kid"], new_kid);
    let (_, old_key) =
        verified_claims(metadata["jwks_uri"].as_str().unwrap(), &access, "ES256").await;
    assert_eq!(old_key["kid"], kid);
    let rotations = app
        .audit(&tenant)
        .await
        .into_iter()
        .filter(|r| r["action"] == "jwks.rotate")
        .count();
    assert_eq!(rotations, 2, "the bundle key and the access-token key");
}
