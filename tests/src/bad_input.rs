//! Malformed requests get a clear 4xx problem, change nothing, and never a 500.

use reqwest::Method;
use serde_json::json;

use crate::harness::TestApp;

#[tokio::test(flavor = "multi_thread")]
async fn malformed_bodies_paths_and_queries_are_4xx_problems() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let tokens = format!("/v1/accounts/{}/tokens", tenant.account_id);
    let audit_before = app.audit(&tenant).await.len();
    let post_raw = |path: &str, content_type: &str, body: Vec<u8>| {
        app.request(Method::POST, path, Some(&tenant.token))
            .header("content-type", content_type)
            .body(body)
    };

    let cases = [
        (
            post_raw(&tokens, "application/json", b"{\"kind\":".to_vec()),
            400,
            "invalid_body",
        ),
        (
            post_raw(&tokens, "application/json", b"[1,2,3]".to_vec()),
            400,
            "invalid_body",
        ),
        (
            post_raw(
                &tokens,
                "application/json",
                b"{\"token_name\": 42}".to_vec(),
            ),
            400,
            "invalid_body",
        ),
        (
            post_raw(&tokens, "application/json", b"{\"unknown\": true}".to_vec()),
            400,
            "invalid_body",
        ),
        (
            post_raw(&tokens, "application/json", vec![0xff, 0xfe, 0x00]),
            400,
            "invalid_body",
        ),
        (
            post_raw(&tokens, "text/plain", b"kind=dev".to_vec()),
            415,
            "unsupported_media_type",
        ),
        (
            post_raw(&tokens, "application/json", vec![b' '; 300 * 1024]),
            413,
            "payload_too_large",
        ),
        (
            app.request(
                Method::GET,
                "/v1/accounts/not-a-uuid/tokens",
                Some(&tenant.token),
            ),
            400,
            "invalid_path",
        ),
        (
            app.request(
                Method::DELETE,
                &format!("{tokens}/12345"),
                Some(&tenant.token),
            ),
            400,
            "invalid_path",
        ),
        (
            app.request(
                Method::GET,
                &format!("{tokens}?limit=ten"),
                Some(&tenant.token),
            ),
            400,
            "invalid_query",
        ),
        (
            app.request(Method::GET, "/v1/nothing-here", Some(&tenant.token)),
            404,
            "route_not_found",
        ),
    ];
    for (request, status, code) in cases {
        app.send(request).await.assert_problem(status, code);
    }
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let reply = app
        .send(post_raw(&tokens, "application/json", deep.into_bytes()))
        .await;
    reply.assert_problem(400, "invalid_body");
    assert_eq!(
        app.audit(&tenant).await.len(),
        audit_before,
        "nothing was written"
    );
    let listed = app.get(&tokens, &tenant.token).await;
    assert_eq!(listed.body.as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_credentials_are_401_problems() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let mut typo = tenant.token.clone();
    let last = typo.pop().unwrap();
    typo.push(if last == 'A' { 'B' } else { 'A' });
    let cases: Vec<(&str, String, &str)> = vec![
        ("authorization", "Bearer".to_owned(), "invalid_token"),
        ("authorization", "Bearer ".to_owned(), "invalid_token"),
        (
            "authorization",
            format!("Basic {}", tenant.token),
            "invalid_token",
        ),
        (
            "authorization",
            "Bearer d2_short".to_owned(),
            "invalid_token",
        ),
        ("authorization", format!("Bearer {typo}"), "invalid_token"),
        (
            "authorization",
            format!("Bearer {}x", tenant.token),
            "invalid_token",
        ),
        (
            "authorization",
            "Bearer eyJhbGciOiJIUzI1NiJ9.e30.x".to_owned(),
            "invalid_token",
        ),
        ("x-api-key", "nonsense".to_owned(), "invalid_token"),
    ];
    for (header, value, code) in cases {
        let reply = app
            .send(
                app.request(Method::GET, "/v1/accounts/me", None)
                    .header(header, value.as_str()),
            )
            .await;
        reply.assert_problem(401, code);
        assert!(
            reply
                .header("www-authenticate")
                .is_some_and(|v| v.starts_with("Bearer"))
        );
    }
    let non_ascii = app
        .send(
            app.request(Method::GET, "/v1/accounts/me", None)
                .header("authorization", &b"Bearer d2_\xff\xfe"[..]),
        )
        .await;
    non_ascii.assert_problem(401, "invalid_token");

    // A JWT is told apart from an API token, and refused: no identity provider is set up.
    let jwt = app
        .get("/v1/accounts/me", "eyJhbGciOiJIUzI1NiJ9.e30.x")
        .await;
    jwt.assert_problem(401, "invalid_token");
    assert_eq!(
        jwt.body["detail"],
        "identity-provider sign-in is not configured"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_database_malformed_tokens_still_get_401_and_the_rest_503() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let (unused, _) = app.issue(&tenant, json!({})).await;
    // A PostgreSQL outage: the SQLite pass has no database server to lose.
    let Some(db) = app.db().postgres() else {
        return;
    };
    db.drop_now();

    // A malformed token is refused before any lookup, so the outage does not show.
    app.get("/v1/accounts/me", "d2_this-is-not-a-real-token")
        .await
        .assert_problem(401, "invalid_token");
    let mut typo = unused.clone();
    typo.replace_range(10..11, if &unused[10..11] == "A" { "B" } else { "A" });
    app.get("/v1/accounts/me", &typo)
        .await
        .assert_problem(401, "invalid_token");
    app.get("/v1/accounts/me", "eyJhbGciOiJIUzI1NiJ9.e30.x")
        .await
        .assert_problem(401, "invalid_token");

    // A well-formed token needs the store: 503 with Retry-After, never a 500.
    let reply = app.get("/v1/accounts/me", &unused).await;
    reply.assert_problem(503, "service_unavailable");
    assert_eq!(reply.header("retry-after"), Some("5"));
    assert!(
        !reply.text.contains("postgres"),
        "nothing internal in the body: {}",
        reply.text
    );
    app.send(app.request(Method::GET, "/readyz", None))
        .await
        .assert_problem(503, "service_unavailable");
    app.send(app.request(Method::GET, "/healthz", None))
        .await
        .assert_status(200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nul_character_anywhere_in_a_body_is_400_invalid_text_and_nothing_is_stored() {
    let app = TestApp::spawn().await;
    let (tenant, dev, publisher) = crate::policy::publishing_tenant(&app).await;
    let audit_before = app.audit(&tenant).await.len();
    let tokens = format!("/v1/accounts/{}/tokens", tenant.account_id);
    let tokens_before = app.get(&tokens, &tenant.token).await.text;

    // A token name (serde_json writes NUL as the escape `\u0000`).
    app.post(
        &tokens,
        &tenant.token,
        json!({ "token_name": "ci\u{0}bot" }),
    )
    .await
    .assert_problem(400, "invalid_text");
    // A member name of an event payload, and a string deep inside one.
    for payload in [
        json!({ "tool_id": "t", "note\u{0}": "x" }),
        json!({ "tool_id": "t", "args": { "list": ["a", "b\u{0}"] } }),
    ] {
        let event = json!({
            "event_type": "authz_decision",
            "payload": payload,
            "occurred_at": chrono::Utc::now().to_rfc3339(),
        });
        app.post("/v1/events/ingest", &dev, json!({ "events": [event] }))
            .await
            .assert_problem(400, "invalid_text");
    }
    // A draft's document.
    let document = json!({ "metadata": { "name": "app" }, "policies": [{ "role": "r\u{0}", "permissions": ["x"] }] });
    app.send(
        app.request(Method::PUT, "/v1/policy/draft", Some(&dev))
            .json(&json!({ "bundle": document })),
    )
    .await
    .assert_problem(400, "invalid_text");
    // Published files, signed: JSON, and YAML with each of its escapes of NUL.
    let yaml = |name: &str| {
        format!(
            "metadata:\n  name: app\n  description: \"{name}\"\npolicies:\n  - role: analyst\n    permissions:\n      - x\n      - tool: secrets.read\n        allow: false\n"
        )
    };
    let json_file = serde_json::to_vec(&json!({ "metadata": { "name": "app", "description": "a\u{0}" }, "policies": [{ "role": "r", "permissions": ["x", { "tool": "y", "allow": false }] }] })).unwrap();
    for body in [
        json_file,
        yaml(r"a\0b").into_bytes(),
        yaml(r"a\x00b").into_bytes(),
        yaml(r"a\u0000b").into_bytes(),
        yaml(r"a\U00000000b").into_bytes(),
        yaml("a\0b").into_bytes(),
    ] {
        publisher
            .publish(&app, &dev, &body, "?app_name=app")
            .await
            .assert_problem(400, "invalid_text");
    }
    // Nothing of the refused requests was stored or audited.
    assert_eq!(app.audit(&tenant).await.len(), audit_before);
    assert_eq!(app.get(&tokens, &tenant.token).await.text, tokens_before);
    assert_eq!(
        app.get("/v1/events?limit=1000", &tenant.token)
            .await
            .assert_status(200),
        &json!([])
    );

    // Text that spells a backslash and a zero is stored as it is.
    publisher
        .publish(&app, &dev, yaml(r"a\\0b").as_bytes(), "?app_name=app")
        .await
        .assert_status(200);
}

/// A body that fails to parse while the credential is still being looked up (a token this
/// server has not cached yet) is a 400, and the server goes on answering: the lookup is
/// never cancelled midway (on SQLite, that panicked the worker).
#[tokio::test(flavor = "multi_thread")]
async fn a_bad_body_beside_a_credential_not_yet_cached_is_a_400() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let mut tokens = Vec::new();
    for _ in 0..8 {
        tokens.push(app.issue(&tenant, json!({ "kind": "dev" })).await.0);
    }
    // A replica of its own: none of the tokens is in its cache.
    let fresh = app.replica(&[]).await;
    let path = format!("/v1/accounts/{}/tokens", tenant.account_id);
    for token in &tokens {
        fresh
            .send(
                fresh
                    .request(Method::POST, &path, Some(token))
                    .header("content-type", "application/json")
                    .body("{\"kind\":"),
            )
            .await
            .assert_problem(400, "invalid_body");
    }
    for token in &tokens {
        fresh.get("/v1/accounts/me", token).await.assert_status(200);
    }
}
