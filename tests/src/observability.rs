use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{TestApp, captured_logs};

#[tokio::test(flavor = "multi_thread")]
async fn request_ids_are_echoed_or_made_and_carried_by_every_log_line_of_the_request() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let made = app.send(app.request(Method::GET, "/healthz", None)).await;
    assert!(uuid::Uuid::parse_str(made.header("x-request-id").unwrap()).is_ok());

    let request_id = format!("e2e-{}", uuid::Uuid::new_v4());
    let reply = app
        .send(
            app.request(
                Method::POST,
                &format!("/v1/accounts/{}/tokens", tenant.account_id),
                Some(&tenant.token),
            )
            .header("X-Request-Id", &request_id)
            .json(&json!({})),
        )
        .await;
    assert_eq!(reply.header("x-request-id"), Some(request_id.as_str()));
    let token_id = reply.assert_status(201)["token_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let logs = captured_logs();
    let lines: Vec<Value> = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| {
            line.to_string().contains(&token_id) || line.to_string().contains(&request_id)
        })
        .collect();
    let issued = lines
        .iter()
        .find(|l| l["message"] == "token issued")
        .expect("the domain logged the issue");
    assert_eq!(issued["span"]["request_id"], request_id.as_str());
    let completed = lines
        .iter()
        .find(|l| l["message"] == "request completed")
        .expect("an access log line");
    assert_eq!(completed["span"]["request_id"], request_id.as_str());
    assert_eq!(completed["http.status"], 201);
    assert_eq!(completed["http.route"], "/v1/accounts/{account_id}/tokens");
    for line in lines.iter().filter(|l| l.to_string().contains(&request_id)) {
        assert_eq!(line["span"]["request_id"], request_id.as_str(), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_requests_by_route_and_the_token_cache() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    for _ in 0..3 {
        app.get("/v1/accounts/me", &tenant.token)
            .await
            .assert_status(200);
    }
    let reply = app.send(app.request(Method::GET, "/metrics", None)).await;
    assert_eq!(reply.status, 200);
    let text = reply.text;
    assert!(
        text.contains(
            r#"d2_http_requests_total{method="GET",route="/v1/accounts/me",status="200"} 3"#
        ),
        "{text}"
    );
    assert!(text.contains("d2_http_request_duration_seconds_bucket"));
    let value = |name: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    assert!(value("d2_token_cache_hits_total") >= 2);
    assert!(value("d2_token_cache_misses_total") >= 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_allows_configured_origins_and_exposes_the_sdk_headers() {
    let app =
        TestApp::spawn_with(&[("D2__HTTP__CORS__ALLOWED_ORIGINS", "https://console.d2.test")])
            .await;
    let preflight = app
        .send(
            app.request(Method::OPTIONS, "/v1/accounts/me", None)
                .header("Origin", "https://console.d2.test")
                .header("Access-Control-Request-Method", "GET")
                .header("Access-Control-Request-Headers", "authorization"),
        )
        .await;
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("https://console.d2.test")
    );
    let tenant = app.bootstrap().await;
    let reply = app
        .send(
            app.request(Method::GET, "/v1/accounts/me", Some(&tenant.token))
                .header("Origin", "https://console.d2.test"),
        )
        .await;
    let exposed = reply
        .header("access-control-expose-headers")
        .unwrap()
        .to_ascii_lowercase();
    for header in [
        "etag",
        "x-d2-poll-seconds",
        "retry-after",
        "x-next-cursor",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    ] {
        assert!(exposed.contains(header), "{header} not exposed: {exposed}");
    }
    let foreign = app
        .send(
            app.request(Method::GET, "/v1/accounts/me", Some(&tenant.token))
                .header("Origin", "https://evil.test"),
        )
        .await;
    assert!(foreign.header("access-control-allow-origin").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn without_configured_origins_the_api_answers_no_cross_origin_caller() {
    let app = TestApp::spawn().await;
    let preflight = app
        .send(
            app.request(Method::OPTIONS, "/v1/accounts/me", None)
                .header("Origin", "https://console.d2.test")
                .header("Access-Control-Request-Method", "GET"),
        )
        .await;
    assert!(preflight.status.is_client_error(), "{}", preflight.status);
    assert!(preflight.header("access-control-allow-origin").is_none());
    let tenant = app.bootstrap().await;
    let reply = app
        .send(
            app.request(Method::GET, "/v1/accounts/me", Some(&tenant.token))
                .header("Origin", "https://console.d2.test"),
        )
        .await;
    assert_eq!(reply.status.as_u16(), 200);
    assert!(reply.header("access-control-allow-origin").is_none());
    // Nothing in the answer depends on `Origin`, and it does not say it does.
    assert!(reply.header("vary").is_none(), "{:?}", reply.header("vary"));
}

/// The `d2_http_requests_total` series of a scrape.
fn request_series(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with("d2_http_requests_total{"))
        .map(|l| {
            l.rsplit_once(' ')
                .map_or(l, |(series, _)| series)
                .to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn request_metrics_have_a_fixed_set_of_labels_whatever_callers_send() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    // Each shape of request once, so the series they make exist before the count.
    app.send(app.request(Method::GET, "/v1/no-such-route-warmup", None))
        .await;
    app.send(app.request(
        Method::from_bytes(b"WARMUP").unwrap(),
        "/v1/accounts/me",
        Some(&tenant.token),
    ))
    .await;
    let before = app.send(app.request(Method::GET, "/metrics", None)).await;
    let before = request_series(&before.text);

    for i in 0..50 {
        let method = Method::from_bytes(format!("FOO{i}").as_bytes()).unwrap();
        app.send(app.request(method, &format!("/v1/made-up-{i}/path"), None))
            .await;
        let method = Method::from_bytes(format!("BAR{i}").as_bytes()).unwrap();
        app.send(app.request(method, "/v1/accounts/me", Some(&tenant.token)))
            .await;
        app.send(app.request(Method::GET, &format!("/made-up-{i}"), Some(&tenant.token)))
            .await;
    }

    let after = app.send(app.request(Method::GET, "/metrics", None)).await;
    let text = after.text;
    for name in ["FOO", "BAR", "made-up"] {
        assert!(!text.contains(name), "{name} reached the metrics: {text}");
    }
    let after = request_series(&text);
    let new: Vec<&String> = after.iter().filter(|s| !before.contains(s)).collect();
    // The scrape itself and a few statuses at most; never one per request.
    assert!(new.len() <= 3, "new series: {new:#?}");
    assert!(
        after.iter().all(|s| [
            "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "OTHER"
        ]
        .iter()
        .any(|m| s.contains(&format!("method=\"{m}\"")))),
        "{after:#?}"
    );
}

/// The value of an unlabelled metric in a scrape.
async fn metric(app: &TestApp, name: &str) -> u64 {
    let text = app
        .send(app.request(Method::GET, "/metrics", None))
        .await
        .text;
    text.lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing: {text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_readiness_probes_shares_one_store_ping_per_second() {
    // The harness's pool has at most 4 connections.
    let app = TestApp::spawn().await;
    let before = metric(&app, "d2_readiness_checks_total").await;
    let started = std::time::Instant::now();
    let probes = (0..200).map(|_| {
        let request = app.request(Method::GET, "/readyz", None);
        async move { request.send().await.expect("the server answers").status() }
    });
    let statuses = futures_util::future::join_all(probes).await;
    let seconds = started.elapsed().as_secs();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let checks = metric(&app, "d2_readiness_checks_total").await - before;
    // At most one ping per started second of the flood (it usually takes well under one).
    assert!(checks >= 1, "the flood was answered without any check");
    assert!(
        checks <= seconds + 1,
        "{checks} store pings for 200 probes in {seconds} s"
    );
    // The pool was not drained by the probes: real requests still get a connection.
    let tenant = app.bootstrap().await;
    app.get("/v1/accounts/me", &tenant.token)
        .await
        .assert_status(200);
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_reports_a_lost_database_within_about_a_second() {
    let app = TestApp::spawn().await;
    // An outage of PostgreSQL: the SQLite pass has no database server to lose.
    let Some(db) = app.db().postgres() else {
        return;
    };
    app.send(app.request(Method::GET, "/readyz", None))
        .await
        .assert_status(200);
    db.drop_now();
    let lost = std::time::Instant::now();
    loop {
        let reply = app.send(app.request(Method::GET, "/readyz", None)).await;
        if reply.status == 503 {
            reply.assert_problem(503, "service_unavailable");
            break;
        }
        reply.assert_status(200);
        assert!(
            lost.elapsed() < std::time::Duration::from_secs(5),
            "/readyz still answers 200 long after the database was lost"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
