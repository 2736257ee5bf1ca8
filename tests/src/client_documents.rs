//! Clients that name themselves (a metadata document) or register themselves (RFC 7591),
//! through the real server: each account's client policy (nothing accepted until an admin
//! says so, its own to every account, checked), the metadata that announces it, URLs the
//! server must never fetch, and registration with the initial access token. The whole
//! flow, with a document served over HTTPS and the MCP Python SDK as the client, is
//! scripts/mcp-interop.sh.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Reply, Tenant, TestApp};

const MCP: &str = "https://mcp.example/mcp";

async fn put_policy(app: &TestApp, tenant: &Tenant, body: Value) -> Reply {
    app.send(
        app.request(Method::PUT, "/v1/agents/client-policy", Some(&tenant.token))
            .json(&body),
    )
    .await
}

async fn accepts_documents(app: &TestApp, tenant: &Tenant) -> bool {
    let path = format!(
        "/.well-known/oauth-authorization-server/oauth/{}",
        tenant.account_id
    );
    let metadata = app.get(&path, "").await;
    let body = metadata.assert_status(200);
    assert!(
        body["token_endpoint_auth_methods_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("none"))
    );
    assert!(
        !body["introspection_endpoint_auth_methods_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("none")),
        "public clients introspect nothing"
    );
    body["client_id_metadata_document_supported"]
        .as_bool()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_policy_is_set_by_its_account_and_announced_in_its_metadata() {
    let app = TestApp::spawn().await;
    let (tenant, other) = (app.bootstrap().await, app.bootstrap().await);
    let default = app.get("/v1/agents/client-policy", &tenant.token).await;
    assert_eq!(
        default.assert_status(200),
        &json!({"metadata_documents": false, "dynamic_registration": false, "initial_access_token_set": false, "scopes": [], "resources": [], "updated_at": null})
    );
    assert!(!accepts_documents(&app, &tenant).await);

    let set = put_policy(
        &app,
        &tenant,
        json!({"metadata_documents": true, "scopes": ["tools:read", "offline_access", "tools:read"], "resources": [MCP]}),
    )
    .await;
    let body = set.assert_status(200).clone();
    assert_eq!(body["scopes"], json!(["offline_access", "tools:read"]));
    assert!(body["updated_at"].is_string());
    let read = app.get("/v1/agents/client-policy", &tenant.token).await;
    assert_eq!(read.assert_status(200), &body);
    assert!(accepts_documents(&app, &tenant).await);
    let audited = app.audit(&tenant).await;
    let entry = audited
        .iter()
        .find(|e| e["action"] == "oauth.client_policy_update")
        .expect("the change is audited");
    assert_eq!(entry["metadata"]["resources"], json!([MCP]));

    // Another account's policy and metadata are its own.
    let untouched = app.get("/v1/agents/client-policy", &other.token).await;
    assert_eq!(untouched.assert_status(200)["metadata_documents"], false);
    assert!(!accepts_documents(&app, &other).await);

    // Bad input: a 400 naming the problem, nothing changed.
    for (why, bad) in [
        (
            "a scope with a space",
            json!({"metadata_documents": true, "scopes": ["a b"]}),
        ),
        (
            "a resource with a fragment",
            json!({"metadata_documents": true, "resources": ["https://mcp.example/#x"]}),
        ),
        (
            "an unknown field",
            json!({"metadata_documents": true, "nope": 1}),
        ),
        ("no switch", json!({"scopes": []})),
        (
            "a time of its own",
            json!({"metadata_documents": true, "updated_at": "2020-01-01T00:00:00Z"}),
        ),
    ] {
        let reply = put_policy(&app, &tenant, bad).await;
        assert_eq!(reply.status.as_u16(), 400, "{why}: {:?}", reply.body);
    }
    let after = app.get("/v1/agents/client-policy", &tenant.token).await;
    assert_eq!(after.assert_status(200), &body, "refusals change nothing");
}

/// An authorization request of `client_id` to the tenant's issuer: its status, whether it
/// redirected, and its page.
async fn authorize(app: &TestApp, tenant: &Tenant, client_id: &str) -> (u16, bool, String) {
    let url = reqwest::Url::parse_with_params(
        &app.url(&format!("/oauth/{}/authorize", tenant.account_id)),
        [
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", "https://app.example/cb"),
            (
                "code_challenge",
                "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            ),
            ("code_challenge_method", "S256"),
            ("state", "s"),
        ],
    )
    .unwrap();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = client.get(url).send().await.unwrap();
    let status = response.status().as_u16();
    let redirected = response.headers().contains_key("location");
    (status, redirected, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_metadata_url_is_fetched_only_when_accepted_and_never_inside_the_network() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let inside = "https://127.0.0.1:9/client.json";
    let (status, redirected, page) = authorize(&app, &tenant, inside).await;
    assert_eq!((status, redirected), (400, false));
    assert!(
        page.contains("does not accept clients identified by a metadata document"),
        "{page}"
    );

    put_policy(
        &app,
        &tenant,
        json!({"metadata_documents": true, "scopes": ["tools:read"], "resources": [MCP]}),
    )
    .await
    .assert_status(200);
    for (client_id, why) in [
        (inside, "its address is not public"),
        ("https://localhost/client.json", "no public address"),
        (
            "https://169.254.169.254/latest",
            "its address is not public",
        ),
        ("https://app.example/", "not a client metadata URL"),
        (
            "https://app.example/a/../client.json",
            "not a client metadata URL",
        ),
        (
            "http://app.example/client.json",
            "must name an agent of this account",
        ),
    ] {
        let (status, redirected, page) = authorize(&app, &tenant, client_id).await;
        assert_eq!((status, redirected), (400, false), "{client_id}");
        assert!(page.contains(why), "{client_id}: {page}");
    }
    let agents = app.get("/v1/agents", &tenant.token).await;
    assert_eq!(agents.assert_status(200), &json!([]), "no agent was made");

    // The token endpoint knows no client by a URL it never resolved.
    let token = app
        .send(
            app.request(
                Method::POST,
                &format!("/oauth/{}/token", tenant.account_id),
                None,
            )
            .form(&[
                ("grant_type", "authorization_code"),
                ("client_id", inside),
                ("code", "d2ac_nope"),
            ]),
        )
        .await;
    assert_eq!(token.status.as_u16(), 401);
    assert_eq!(token.body["error"], "invalid_client");
}

/// A registration request to the tenant's issuer, with `token` as the initial access
/// token.
async fn register(app: &TestApp, tenant: &Tenant, token: Option<&str>, body: Value) -> Reply {
    let mut request = app
        .request(
            Method::POST,
            &format!("/oauth/{}/register", tenant.account_id),
            None,
        )
        .json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    app.send(request).await
}

async fn initial_access(app: &TestApp, tenant: &Tenant) -> String {
    let issued = app
        .post(
            "/v1/agents/client-policy/initial-access-token",
            &tenant.token,
            json!({}),
        )
        .await;
    let token = issued.assert_status(201)["initial_access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    app.remember(&token);
    token
}

fn public_client() -> Value {
    json!({
        "redirect_uris": ["http://127.0.0.1:3000/callback"],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
        "client_name": "Desktop client",
        "scope": "tools:read",
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_register_themselves_only_where_the_account_lets_them() {
    let app = TestApp::spawn().await;
    let (tenant, other) = (app.bootstrap().await, app.bootstrap().await);
    let off = register(&app, &tenant, Some("d2iat_guess"), public_client()).await;
    assert_eq!(off.status.as_u16(), 403);
    assert_eq!(off.body["error"], "registration_disabled");
    let anonymous = register(&app, &tenant, None, public_client()).await;
    assert_eq!(
        anonymous.status.as_u16(),
        401,
        "a credential is asked first"
    );

    put_policy(
        &app,
        &tenant,
        json!({"metadata_documents": false, "dynamic_registration": true, "scopes": ["tools:read"], "resources": [MCP]}),
    )
    .await
    .assert_status(200);
    let metadata = app
        .get(
            &format!(
                "/.well-known/oauth-authorization-server/oauth/{}",
                tenant.account_id
            ),
            "",
        )
        .await;
    assert_eq!(
        metadata.assert_status(200)["registration_endpoint"],
        app.url(&format!("/oauth/{}/register", tenant.account_id))
    );
    let no_token = register(&app, &tenant, None, public_client()).await;
    assert_eq!(no_token.status.as_u16(), 401);
    assert_eq!(no_token.body["error"], "invalid_token");
    assert!(
        no_token
            .header("www-authenticate")
            .is_some_and(|c| c.contains("invalid_token"))
    );
    let token = initial_access(&app, &tenant).await;
    let policy = app.get("/v1/agents/client-policy", &tenant.token).await;
    assert_eq!(policy.assert_status(200)["initial_access_token_set"], true);

    // A public client: no secret, the same client_id when it registers again.
    let first = register(&app, &tenant, Some(&token), public_client()).await;
    let body = first.assert_status(201).clone();
    assert!(body.get("client_secret").is_none());
    assert_eq!(body["token_endpoint_auth_method"], "none");
    assert_eq!(body["scope"], "tools:read");
    let again = register(&app, &tenant, Some(&token), public_client()).await;
    assert_eq!(again.assert_status(201)["client_id"], body["client_id"]);

    // A confidential client gets a secret that works at the token endpoint.
    let confidential = register(
        &app,
        &tenant,
        Some(&token),
        json!({"grant_types": ["client_credentials"], "client_name": "Nightly job"}),
    )
    .await;
    let registered = confidential.assert_status(201).clone();
    let (client_id, secret) = (
        registered["client_id"].as_str().unwrap(),
        registered["client_secret"].as_str().unwrap(),
    );
    app.remember(secret);
    assert_eq!(registered["client_secret_expires_at"], 0);
    let issued = app
        .send(
            app.request(
                Method::POST,
                &format!("/oauth/{}/token", tenant.account_id),
                None,
            )
            .basic_auth(client_id, Some(secret))
            .form(&[("grant_type", "client_credentials"), ("resource", MCP)]),
        )
        .await;
    assert_eq!(issued.assert_status(200)["token_type"], "Bearer");
    let agents = app.get("/v1/agents", &tenant.token).await;
    let dynamic = agents
        .assert_status(200)
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["registered_dynamically"] == true)
        .count();
    assert_eq!(dynamic, 2);

    // Bad input: RFC 7591 errors, nothing registered.
    for (why, content_type, body, error) in [
        (
            "a redirect URI on plain http",
            "application/json",
            json!({"redirect_uris": ["http://app.example/cb"]}).to_string(),
            "invalid_redirect_uri",
        ),
        (
            "the code flow without a redirect URI",
            "application/json",
            json!({"client_name": "x"}).to_string(),
            "invalid_redirect_uri",
        ),
        (
            "an unknown authentication method",
            "application/json",
            json!({"redirect_uris": ["https://app.example/cb"], "token_endpoint_auth_method": "tls_client_auth"}).to_string(),
            "invalid_client_metadata",
        ),
        (
            "not JSON",
            "application/json",
            "{".to_owned(),
            "invalid_client_metadata",
        ),
        (
            "a form",
            "application/x-www-form-urlencoded",
            "redirect_uris=https://app.example/cb".to_owned(),
            "invalid_client_metadata",
        ),
    ] {
        let reply = app
            .send(
                app.request(
                    Method::POST,
                    &format!("/oauth/{}/register", tenant.account_id),
                    None,
                )
                .bearer_auth(&token)
                .header("content-type", content_type)
                .body(body),
            )
            .await;
        assert_eq!(reply.status.as_u16(), 400, "{why}: {:?}", reply.body);
        assert_eq!(reply.body["error"], error, "{why}");
    }
    let agents = app.get("/v1/agents", &tenant.token).await;
    assert_eq!(agents.assert_status(200).as_array().unwrap().len(), 2);

    // Another account's token is not this one's, nor this one's another's.
    put_policy(
        &app,
        &other,
        json!({"metadata_documents": false, "dynamic_registration": true}),
    )
    .await
    .assert_status(200);
    let theirs = initial_access(&app, &other).await;
    let crossed = register(&app, &tenant, Some(&theirs), public_client()).await;
    assert_eq!(crossed.status.as_u16(), 401);
    let crossed = register(&app, &other, Some(&token), public_client()).await;
    assert_eq!(crossed.status.as_u16(), 401);
    // A new token replaces the old.
    let newer = initial_access(&app, &tenant).await;
    let replaced = register(&app, &tenant, Some(&token), public_client()).await;
    assert_eq!(replaced.status.as_u16(), 401);
    register(&app, &tenant, Some(&newer), public_client())
        .await
        .assert_status(201);
}
