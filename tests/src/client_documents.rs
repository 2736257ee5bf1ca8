//! Clients named by a metadata document, through the real server: each account's client
//! policy (nothing accepted until an admin says so, its own to every account, checked),
//! the metadata that announces it, and URLs the server must never fetch. The whole flow,
//! with a document served over HTTPS and the MCP Python SDK as the client, is
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
        &json!({"metadata_documents": false, "scopes": [], "resources": [], "updated_at": null})
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
