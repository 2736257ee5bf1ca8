use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::TestApp;

#[tokio::test(flavor = "multi_thread")]
async fn issue_needs_the_control_plane_token() {
    let app = TestApp::spawn().await;
    let issue = |secret: Option<&str>| {
        let request = app.request(Method::POST, "/v1/user-token/issue", None);
        match secret {
            Some(secret) => request.header("X-Control-Plane-Token", secret),
            None => request,
        }
    };
    let missing = app.send(issue(None)).await;
    missing.assert_problem(401, "invalid_control_plane_token");
    assert_eq!(
        missing.header("www-authenticate"),
        Some("Bearer realm=\"d2\"")
    );
    let wrong = format!("{}x", app.control_plane);
    app.send(issue(Some(&wrong)))
        .await
        .assert_problem(401, "invalid_control_plane_token");

    let created = app.send(issue(Some(&app.control_plane))).await;
    let body = created.assert_status(201).clone();
    assert_eq!(body["created_account"], true);
    assert_eq!(created.header("cache-control"), Some("no-store"));
    let token = body["userToken"].as_str().unwrap();
    let me = app.get("/v1/accounts/me", token).await;
    assert_eq!(me.assert_status(200)["account_id"], body["account_id"]);
    assert_eq!(
        body["scopes"].as_array().unwrap().len(),
        d2_kernel::Scope::ALL.len(),
        "an admin token holds every scope"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn break_glass_issues_an_owner_token_for_an_existing_account_and_is_audited() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let request = |body: Value| {
        app.request(Method::POST, "/v1/user-token/issue", None)
            .header("X-Control-Plane-Token", &app.control_plane)
            .json(&body)
    };
    let glass = app
        .send(request(json!({ "account_id": tenant.account_id })))
        .await;
    let body = glass.assert_status(201).clone();
    assert_eq!(body["created_account"], false);
    assert_eq!(body["account_id"], tenant.account_id.as_str());
    assert_eq!(body["user_id"], tenant.user_id.as_str());
    app.get("/v1/accounts/me", body["userToken"].as_str().unwrap())
        .await
        .assert_status(200);
    let trail = app.audit(&tenant).await;
    let record = trail
        .iter()
        .find(|r| r["action"] == "token.break_glass")
        .expect("audited");
    assert_eq!(record["actor"], "control_plane");
    assert_eq!(record["resource_id"], body["token_id"]);
    assert!(trail.iter().any(|r| r["action"] == "account.bootstrap"));

    let unknown = app
        .send(request(json!({ "account_id": uuid::Uuid::new_v4() })))
        .await;
    unknown.assert_problem(404, "account_not_found");
    app.send(request(json!({ "account_id": "not-a-uuid" })))
        .await
        .assert_problem(400, "invalid_body");
    app.send(request(json!({ "owner_email": "nobody" })))
        .await
        .assert_problem(400, "invalid_body");
    app.send(request(json!({ "plan": "enterprise" })))
        .await
        .assert_problem(400, "invalid_body");
}

#[tokio::test(flavor = "multi_thread")]
async fn bootstrap_is_disabled_without_a_control_plane_token() {
    let app = TestApp::spawn_with(&[("D2__AUTH__CONTROL_PLANE_TOKEN", "")]).await;
    let reply = app
        .send(
            app.request(Method::POST, "/v1/user-token/issue", None)
                .header("X-Control-Plane-Token", "anything-at-all-here"),
        )
        .await;
    reply.assert_problem(404, "bootstrap_disabled");
}

#[tokio::test(flavor = "multi_thread")]
async fn callers_rotate_and_revoke_their_own_token() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let rotated = app
        .send(app.request(Method::POST, "/v1/user-token/rotate", Some(&tenant.token)))
        .await;
    let body = rotated.assert_status(201).clone();
    assert_eq!(body["previous_token_id"], tenant.token_id.as_str());
    let new = body["userToken"].as_str().unwrap().to_owned();
    assert_eq!(body["token"], body["userToken"]);
    app.get("/v1/accounts/me", &new).await.assert_status(200);
    app.get("/v1/accounts/me", &tenant.token)
        .await
        .assert_status(200);
    app.advance(601);
    app.get("/v1/accounts/me", &tenant.token)
        .await
        .assert_problem(401, "token_expired");

    let revoked = app
        .send(app.request(Method::POST, "/v1/user-token/revoke", Some(&new)))
        .await;
    assert_eq!(revoked.assert_status(200)["message"], "token_revoked");
    app.get("/v1/accounts/me", &new)
        .await
        .assert_problem(401, "token_revoked");
    let again = app
        .send(app.request(Method::POST, "/v1/user-token/revoke", Some(&new)))
        .await;
    again.assert_problem(401, "token_revoked");
}

#[tokio::test(flavor = "multi_thread")]
async fn unauthenticated_and_failed_requests_are_limited_per_ip_but_valid_tokens_are_not() {
    let app = TestApp::spawn_with(&[
        ("D2__RATE_LIMIT__UNAUTHENTICATED_PER_MINUTE", "1"),
        ("D2__RATE_LIMIT__UNAUTHENTICATED_BURST", "3"),
    ])
    .await;
    let tenant = app.bootstrap().await; // spends one
    // Verified once, so this replica knows it: an address over its failure budget gets
    // answers from the token cache only (see the next test).
    app.get("/v1/accounts/me", &tenant.token)
        .await
        .assert_status(200);
    for _ in 0..2 {
        let reply = app
            .send(app.request(Method::GET, "/v1/accounts/me", None))
            .await;
        reply.assert_problem(401, "missing_authorization");
    }
    let limited = app
        .send(app.request(Method::GET, "/v1/accounts/me", None))
        .await;
    limited.assert_problem(429, "rate_limited");
    let retry: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=61).contains(&retry));
    assert_eq!(limited.header("x-ratelimit-limit"), Some("3"));
    assert_eq!(limited.header("x-ratelimit-remaining"), Some("0"));
    assert!(limited.header("x-ratelimit-reset").is_some());

    // Bad tokens are charged too, and get 429 now.
    let bad = app.get("/v1/accounts/me", "d2_not-a-token").await;
    bad.assert_problem(429, "rate_limited");
    // A valid token is never limited per IP; probes are exempt.
    for _ in 0..5 {
        app.get("/v1/accounts/me", &tenant.token)
            .await
            .assert_status(200);
        app.send(app.request(Method::GET, "/healthz", None))
            .await
            .assert_status(200);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn behind_a_trusted_proxy_spoofed_forwarded_entries_and_ipv6_host_bits_share_one_bucket() {
    // One trusted proxy: the test client plays it, appending the address it "saw" last.
    let app = TestApp::spawn_with(&[
        ("D2__HTTP__TRUSTED_PROXIES", "1"),
        ("D2__RATE_LIMIT__UNAUTHENTICATED_PER_MINUTE", "1"),
        ("D2__RATE_LIMIT__UNAUTHENTICATED_BURST", "3"),
    ])
    .await;
    let anonymous = |forwarded: String| {
        app.send(
            app.request(Method::GET, "/v1/accounts/me", None)
                .header("X-Forwarded-For", forwarded),
        )
    };

    // A new spoofed left-most entry on every request: still one client.
    for i in 0..3 {
        anonymous(format!("198.51.100.{i}, 203.0.113.7"))
            .await
            .assert_problem(401, "missing_authorization");
    }
    for i in 3..10 {
        anonymous(format!("198.51.100.{i}, 10.{i}.0.1, 203.0.113.7"))
            .await
            .assert_problem(429, "rate_limited");
    }
    // Another client behind the same proxy has its own allowance.
    anonymous("198.51.100.1, 203.0.113.8".to_owned())
        .await
        .assert_problem(401, "missing_authorization");

    // An IPv6 client rotating the lower 64 bits of its address: one /64, one bucket.
    for i in 0..3 {
        anonymous(format!("2001:db8:7:1:{i:x}:{i:x}:{i:x}:1"))
            .await
            .assert_problem(401, "missing_authorization");
    }
    for i in 3..10 {
        anonymous(format!("2001:db8:7:1:{i:x}:ffff:{i:x}:{i:x}"))
            .await
            .assert_problem(429, "rate_limited");
    }
    // The next /64 is another client.
    anonymous("2001:db8:7:2::1".to_owned())
        .await
        .assert_problem(401, "missing_authorization");

    // An IPv4 client is the same client written as an IPv4-mapped IPv6 address.
    for _ in 0..3 {
        anonymous("203.0.113.9".to_owned())
            .await
            .assert_problem(401, "missing_authorization");
    }
    anonymous("::ffff:203.0.113.9".to_owned())
        .await
        .assert_problem(429, "rate_limited");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_dev_database_gets_a_first_account_once_and_its_token_works() {
    let app = TestApp::spawn().await;
    let first = app
        .app
        .first_dev_account()
        .await
        .unwrap()
        .expect("an empty database gets a first account");
    let token = first.issued.secret.expose().to_owned();
    app.remember(&token);
    let me = app.get("/v1/accounts/me", &token).await;
    assert_eq!(
        me.assert_status(200)["account_id"],
        first.account_id.to_string()
    );
    // Once: the database is not empty any more.
    assert!(app.app.first_dev_account().await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn outside_the_dev_profile_no_account_is_made_unasked() {
    let pepper = crate::harness::random_secret();
    let app = TestApp::spawn_with(&[]).await;
    let mut settings = (*app.app.settings).clone();
    settings.profile = d2_app::Profile::new("production");
    settings.crypto.token_pepper = Some(pepper.into());
    let production = d2_app::App::build_with(
        settings,
        std::sync::Arc::new(d2_kernel::SystemClock),
        d2_app::Mode::Command,
    )
    .await
    .unwrap();
    assert!(production.first_dev_account().await.unwrap().is_none());
    production.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn once_an_address_is_over_its_failure_budget_unknown_tokens_cost_no_lookup() {
    let app = TestApp::spawn_with(&[
        ("D2__RATE_LIMIT__UNAUTHENTICATED_PER_MINUTE", "1"),
        ("D2__RATE_LIMIT__UNAUTHENTICATED_BURST", "3"),
    ])
    .await;
    let tenant = app.bootstrap().await; // spends one
    app.get("/v1/accounts/me", &tenant.token)
        .await
        .assert_status(200); // now cached
    let forged = || {
        d2_tokens::TokenSecret::generate()
            .unwrap()
            .expose()
            .to_owned()
    };
    let lookups = || async {
        let text = app.get("/metrics", "").await.text;
        text.lines()
            .find_map(|l| l.strip_prefix("d2_token_cache_misses_total "))
            .unwrap()
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    for _ in 0..2 {
        app.get("/v1/accounts/me", &forged())
            .await
            .assert_problem(401, "invalid_token");
    }
    app.get("/v1/accounts/me", &forged())
        .await
        .assert_problem(429, "rate_limited");
    let before = lookups().await;
    for _ in 0..50 {
        let reply = app.get("/v1/accounts/me", &forged()).await;
        reply.assert_problem(429, "rate_limited");
        assert!(reply.header("retry-after").is_some());
    }
    assert_eq!(
        lookups().await,
        before,
        "no lookup for an address over its budget"
    );
    // A token already known is still served from the cache.
    app.get("/v1/accounts/me", &tenant.token)
        .await
        .assert_status(200);
}
