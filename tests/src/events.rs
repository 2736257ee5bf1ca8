//! Telemetry ingest, the stored events and the metrics computed from them.

use std::future::Future;

use chrono::{Duration, SecondsFormat, Utc};
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Tenant, TestApp};

fn at(minutes_ago: i64) -> String {
    (Utc::now() - Duration::minutes(minutes_ago)).to_rfc3339_opts(SecondsFormat::Micros, false)
}

/// An `authz_decision` as SDK 1.2.2 sends it (in cloud mode its `service` is "unknown").
pub(crate) fn decision(tool: &str, result: &str, minutes_ago: i64) -> Value {
    json!({
        "event_type": "authz_decision",
        "payload": {
            "tool_id": tool, "result": result, "mode": "cloud", "decision_ms": 2.5,
            "service": "unknown", "host": "agent-7", "pid": 4242, "flush_interval_s": 60,
        },
        "occurred_at": at(minutes_ago),
    })
}

pub(crate) async fn ingest(app: &TestApp, token: &str, events: Value) -> crate::harness::Reply {
    app.post("/v1/events/ingest", token, json!({ "events": events }))
        .await
}

pub(crate) async fn events_of(app: &TestApp, tenant: &Tenant) -> Vec<Value> {
    app.get("/v1/events?limit=1000", &tenant.token)
        .await
        .assert_status(200)
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_is_stored_once_and_read_back_through_events_and_metrics() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let (server, server_id) = app
        .issue(
            &tenant,
            json!({ "kind": "server", "app_name": "Billing Agent" }),
        )
        .await;
    let batch = json!([
        decision("read_invoice", "allowed", 30),
        decision("read_invoice", "allowed", 20),
        decision("delete_invoice", "denied", 10),
        { "event_type": "tool_invoked", "payload": { "tool_id": "pay", "allowed": false }, "occurred_at": at(5) },
        { "event_type": "policy_poll", "payload": {}, "occurred_at": at(1) },
    ]);
    let reply = app
        .send(
            app.request(Method::POST, "/v1/events/ingest", Some(&server))
                .header("X-Request-Id", "req-ingest-1")
                .json(&json!({ "events": batch })),
        )
        .await;
    let body = reply.assert_status(202);
    assert_eq!(
        body,
        &json!({ "message": "Accepted 5 events", "accepted": 5, "duplicates": 0 })
    );

    // The SDK's retry of the same batch stores nothing new.
    let again = ingest(&app, &server, batch.clone()).await;
    assert_eq!(again.assert_status(202)["duplicates"], 5);
    assert_eq!(again.assert_status(202)["accepted"], 0);

    let events = events_of(&app, &tenant).await;
    assert_eq!(events.len(), 5);
    let newest = &events[0];
    assert_eq!(newest["event_type"], "policy_poll");
    let denied = events
        .iter()
        .find(|e| e["payload"]["tool_id"] == "delete_invoice")
        .unwrap();
    assert_eq!(denied["decision"], "denied");
    assert_eq!(denied["tool"], "delete_invoice");
    assert_eq!(denied["app_name"], "Billing_Agent", "from the server token");
    assert_eq!(
        denied["service"], "Billing_Agent",
        "\"unknown\" is replaced by the app"
    );
    assert_eq!(denied["host"], "agent-7");
    assert_eq!(denied["source_ip"], "127.0.0.1");
    assert_eq!(denied["request_id"], "req-ingest-1");
    assert_eq!(denied["token_id"], server_id.as_str());
    assert_eq!(denied["payload"]["pid"], 4242);

    let summary = app
        .get("/v1/metrics/summary", &tenant.token)
        .await
        .assert_status(200)
        .clone();
    assert_eq!(summary["total_authorizations"], 4);
    assert_eq!(summary["total_denied"], 2, "a boolean false is a denial");
    assert_eq!(summary["deny_rate"], 0.5);
    assert_eq!(summary["unique_tools"], 3);
    assert_eq!(summary["unique_resources"], 3);
    assert_eq!(summary["avg_decision_ms"], 2.5);
    assert!(summary["avg_ingest_lag_ms"].as_f64().unwrap() > 0.0);

    let series = app
        .get("/v1/metrics/timeseries?bucket=day&days=2", &tenant.token)
        .await
        .assert_status(200)
        .clone();
    assert_eq!(series["bucket"], "day");
    let points = series["points"].as_array().unwrap();
    let total: u64 = points.iter().map(|p| p["total"].as_u64().unwrap()).sum();
    let denied_total: u64 = points.iter().map(|p| p["denied"].as_u64().unwrap()).sum();
    assert_eq!((total, denied_total), (4, 2));

    let top = app
        .get("/v1/metrics/top?dimension=tools&n=1", &tenant.token)
        .await
        .assert_status(200)
        .clone();
    assert_eq!(
        top["total"], 4,
        "the total covers every key, not only the top n"
    );
    assert_eq!(top["items"], json!([{ "key": "read_invoice", "count": 2 }]));
    let types = app
        .get("/v1/metrics/top?dimension=event_type", &tenant.token)
        .await
        .assert_status(200)
        .clone();
    assert_eq!(types["total"], 5);
    assert_eq!(
        types["items"][0],
        json!({ "key": "authz_decision", "count": 3 })
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn events_are_filtered_and_paged_newest_first() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let (billing, _) = app
        .issue(&tenant, json!({ "kind": "server", "app_name": "billing" }))
        .await;
    let (support, _) = app
        .issue(&tenant, json!({ "kind": "server", "app_name": "support" }))
        .await;
    for (token, n) in [(&billing, 3), (&support, 2)] {
        for i in 0..n {
            ingest(&app, token, json!([decision("t", "allowed", 50 - i)]))
                .await
                .assert_status(202);
            app.advance(1);
        }
    }
    let list = |query: &str| {
        let path = format!("/v1/events?{query}");
        let token = tenant.token.clone();
        let app = &app;
        async move { app.get(&path, &token).await }
    };
    let billing_events = list("app=billing").await;
    assert_eq!(
        billing_events.assert_status(200).as_array().unwrap().len(),
        3
    );
    let by_service = list("service=support").await;
    assert_eq!(by_service.assert_status(200).as_array().unwrap().len(), 2);
    let by_type = list("event_type=policy_poll").await;
    assert!(by_type.assert_status(200).as_array().unwrap().is_empty());
    let instant = |seconds_ago: i64| {
        urlencode(
            &(Utc::now() - Duration::seconds(seconds_ago))
                .to_rfc3339_opts(SecondsFormat::Micros, false),
        )
    };
    // 49 and 48 minutes ago: two of billing's, one of support's.
    let window = list(&format!(
        "since={}&until={}",
        instant(49 * 60 + 30),
        instant(47 * 60 + 30)
    ))
    .await;
    assert_eq!(window.assert_status(200).as_array().unwrap().len(), 3);

    // Pages of two: newest first, every event once.
    let mut seen = Vec::new();
    let mut path = "/v1/events?limit=2".to_owned();
    loop {
        let page = app.get(&path, &tenant.token).await;
        let items = page.assert_status(200).as_array().unwrap().clone();
        seen.extend(items.iter().map(|e| e["id"].as_i64().unwrap()));
        match page.header("x-next-cursor") {
            Some(cursor) => path = format!("/v1/events?limit=2&cursor={}", urlencode(cursor)),
            None => break,
        }
    }
    let mut expected = seen.clone();
    expected.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(seen, expected);
    assert_eq!(seen.len(), 5);
}

fn urlencode(text: &str) -> String {
    text.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test(flavor = "multi_thread")]
async fn reading_events_and_metrics_needs_metrics_read_granted_explicitly() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let (dev, _) = app.issue(&tenant, json!({ "kind": "dev" })).await;
    let (server, _) = app
        .issue(&tenant, json!({ "kind": "server", "app_name": "a" }))
        .await;
    let (reader, _) = app
        .issue(&tenant, json!({ "scopes": ["metrics.read"] }))
        .await;
    ingest(&app, &dev, json!([decision("t", "allowed", 1)]))
        .await
        .assert_status(202);
    for path in [
        "/v1/events",
        "/v1/metrics/summary",
        "/v1/metrics/timeseries",
        "/v1/metrics/top",
    ] {
        for token in [&dev, &server] {
            app.get(path, token)
                .await
                .assert_problem(403, "insufficient_scope");
        }
        app.get(path, &reader).await.assert_status(200);
    }
    // A reader cannot ingest.
    ingest(&app, &reader, json!([]))
        .await
        .assert_problem(403, "insufficient_scope");

    // With metrics disabled for the account, reads are refused; ingest still works.
    app.patch(
        "/v1/accounts/me",
        &tenant.token,
        json!({ "metrics_enabled": false }),
    )
    .await
    .assert_status(200);
    for path in ["/v1/events", "/v1/metrics/summary"] {
        app.get(path, &reader)
            .await
            .assert_problem(403, "metrics_disabled");
    }
    ingest(&app, &dev, json!([decision("t", "allowed", 1)]))
        .await
        .assert_status(202);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_account_never_sees_anothers_events_or_metrics() {
    let app = TestApp::spawn().await;
    let mine = app.bootstrap().await;
    let theirs = app.bootstrap().await;
    ingest(
        &app,
        &theirs.token,
        json!([decision("their_secret_tool", "allowed", 1)]),
    )
    .await
    .assert_status(202);
    assert!(events_of(&app, &mine).await.is_empty());
    for path in [
        "/v1/metrics/summary",
        "/v1/metrics/top",
        "/v1/metrics/top?dimension=event_type",
        "/v1/metrics/timeseries",
    ] {
        let reply = app.get(path, &mine.token).await;
        reply.assert_status(200);
        assert!(!reply.text.contains("their_secret_tool"), "{path}");
    }
    let summary = app.get("/v1/metrics/summary", &mine.token).await;
    assert_eq!(summary.assert_status(200)["total_authorizations"], 0);
    // Their cursor replayed by me finds nothing of theirs.
    let page = app.get("/v1/events?limit=1", &theirs.token).await;
    assert_eq!(page.assert_status(200).as_array().unwrap().len(), 1);
    assert_eq!(events_of(&app, &theirs).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_batches_are_refused_whole_and_nothing_is_stored() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let good = decision("t", "allowed", 1);
    let raw = |body: Vec<u8>, content_type: &str| {
        app.request(Method::POST, "/v1/events/ingest", Some(&tenant.token))
            .header("content-type", content_type.to_owned())
            .body(body)
    };
    let cases: Vec<(reqwest::RequestBuilder, u16, &str, &str)> = vec![
        (raw(b"not json".to_vec(), "application/json"), 400, "invalid_event", "not JSON"),
        (raw(vec![0xff, 0xfe, 0x7b], "application/json"), 400, "invalid_event", "not JSON"),
        (raw(b"{}".to_vec(), "text/plain"), 415, "unsupported_media_type", "JSON"),
        (
            raw(
                format!("{}{}", "[".repeat(5000), "]".repeat(5000)).into_bytes(),
                "application/json",
            ),
            400,
            "invalid_event",
            "not JSON",
        ),
        (
            raw(serde_json::to_vec(&json!([good])).unwrap(), "application/json"),
            400,
            "invalid_event",
            "must be an object",
        ),
        (
            raw(
                serde_json::to_vec(&json!({ "events": [good, { "event_type": "x", "payload": [], "occurred_at": at(1) }] }))
                    .unwrap(),
                "application/json",
            ),
            400,
            "invalid_event",
            "events[1]: `payload` must be an object",
        ),
        (
            raw(
                serde_json::to_vec(&json!({ "events": [good, good, { "event_type": "x", "payload": {}, "occurred_at": (Utc::now() + Duration::hours(2)).to_rfc3339() }] }))
                    .unwrap(),
                "application/json",
            ),
            400,
            "invalid_event",
            "events[2]: `occurred_at`",
        ),
        (
            raw(
                serde_json::to_vec(&json!({ "events": [{ "event_type": "x", "payload": {}, "occurred_at": "1999-01-01T00:00:00Z" }] }))
                    .unwrap(),
                "application/json",
            ),
            400,
            "invalid_event",
            "events[0]: `occurred_at`",
        ),
        (
            raw(
                serde_json::to_vec(&json!({ "events": [{ "event_type": "Robert'); DROP TABLE events;--", "payload": {}, "occurred_at": at(1) }] }))
                    .unwrap(),
                "application/json",
            ),
            400,
            "invalid_event",
            "events[0]: `event_type`",
        ),
        (
            raw(
                serde_json::to_vec(&json!({ "events": [{ "event_type": "x", "payload": {}, "occurred_at": "yesterday" }] }))
                    .unwrap(),
                "application/json",
            ),
            400,
            "invalid_event",
            "ISO-8601",
        ),
        (
            raw(
                serde_json::to_vec(&json!({ "events": [{ "event_type": "x", "payload": { "blob": "x".repeat(50_000) }, "occurred_at": at(1) }] }))
                    .unwrap(),
                "application/json",
            ),
            413,
            "event_batch_too_large",
            "40960",
        ),
    ];
    for (request, status, code, detail) in cases {
        let reply = app.send(request).await;
        reply.assert_problem(status, code);
        assert!(reply.text.contains(detail), "{code}: {}", reply.text);
    }
    assert!(
        events_of(&app, &tenant).await.is_empty(),
        "nothing of a refused batch is stored"
    );

    // A huge string within the cap, and any event type that matches the rule, are stored.
    let big = json!([{ "event_type": "custom.thing_2", "payload": { "note": "é".repeat(10_000) }, "occurred_at": at(1) }]);
    ingest(&app, &tenant.token, big).await.assert_status(202);
    // An empty batch is accepted and stores nothing.
    let empty = ingest(&app, &tenant.token, json!([])).await;
    assert_eq!(empty.assert_status(202)["accepted"], 0);
    assert_eq!(events_of(&app, &tenant).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn absurd_query_parameters_are_refused() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let cases = [
        ("/v1/metrics/timeseries?days=0", "invalid_query"),
        ("/v1/metrics/timeseries?days=91", "invalid_query"),
        ("/v1/metrics/timeseries?days=-1", "invalid_query"),
        ("/v1/metrics/timeseries?days=99999999999", "invalid_query"),
        ("/v1/metrics/timeseries?bucket=week", "invalid_query"),
        ("/v1/metrics/top?days=181", "invalid_query"),
        ("/v1/metrics/top?n=0", "invalid_query"),
        ("/v1/metrics/top?n=101", "invalid_query"),
        ("/v1/metrics/top?dimension=users", "invalid_query"),
        ("/v1/metrics/summary?start=yesterday", "invalid_query"),
        (
            "/v1/metrics/summary?start=2026-01-02T00:00:00Z&end=2026-01-01T00:00:00Z",
            "invalid_time_range",
        ),
        (
            "/v1/events?since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z",
            "invalid_time_range",
        ),
        ("/v1/events?limit=0", "invalid_query"),
        ("/v1/events?limit=1001", "invalid_query"),
        ("/v1/events?cursor=garbage", "invalid_cursor"),
        ("/v1/events?colour=red", "invalid_query"),
    ];
    for (path, code) in cases {
        app.get(path, &tenant.token).await.assert_problem(400, code);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn extreme_dates_in_time_ranges_are_400_never_a_panic_or_500() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    // The smallest and largest instants the server reads, and years just outside RFC
    // 3339's four digits on either side.
    let min = chrono::DateTime::<chrono::Utc>::MIN_UTC.to_rfc3339();
    let max = chrono::DateTime::<chrono::Utc>::MAX_UTC.to_rfc3339();
    let outside = [
        min.as_str(),
        max.as_str(),
        "-262000-06-01T00:00:00Z",
        "+262000-06-01T00:00:00Z",
        "-0001-12-31T23:59:59Z",
        "0000-12-31T23:59:59Z",
        "+10000-01-01T00:00:00Z",
    ];
    // Beyond what the server reads at all: not a date, like any other unreadable value.
    let unreadable = ["-262144-01-01T00:00:00Z", "+262143-12-31T23:59:59Z"];
    let routes = [
        ("/v1/metrics/summary", "start", "end"),
        ("/v1/events", "since", "until"),
        ("/v1/audit", "since", "until"),
    ];
    let get = |path: &str, query: Vec<(&str, &str)>| {
        app.send(
            app.request(Method::GET, path, Some(&tenant.token))
                .query(&query),
        )
    };
    for (path, from, to) in routes {
        for date in outside {
            for query in [
                vec![(to, date)],
                vec![(from, date)],
                vec![(from, date), (to, "2026-01-01T00:00:00Z")],
                vec![(from, "2000-01-01T00:00:00Z"), (to, date)],
                vec![(from, date), (to, date)],
            ] {
                let reply = get(path, query.clone()).await;
                assert_eq!(reply.status, 400, "{path} {query:?}: {}", reply.text);
                reply.assert_problem(400, "invalid_time_range");
            }
        }
        for date in unreadable {
            for name in [from, to] {
                get(path, vec![(name, date)])
                    .await
                    .assert_problem(400, "invalid_query");
            }
        }
        // The far ends of the range every store keeps: answered.
        for query in [
            vec![(from, "0001-01-01T00:00:00Z")],
            vec![(to, "0001-01-02T00:00:00Z")],
            vec![(to, "9999-12-31T23:59:59Z")],
            vec![(from, "0001-01-01T00:00:00Z"), (to, "9999-12-31T23:59:59Z")],
        ] {
            let reply = get(path, query.clone()).await;
            assert_eq!(reply.status, 200, "{path} {query:?}: {}", reply.text);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn more_events_than_the_plans_batch_size_is_413_so_the_sdk_splits() {
    let app = TestApp::spawn_with(&[("D2__PLANS__TRIAL__EVENT_BATCH", "2")]).await;
    let tenant = app.bootstrap().await;
    let three = json!([
        decision("a", "allowed", 1),
        decision("b", "allowed", 1),
        decision("c", "allowed", 1)
    ]);
    let reply = ingest(&app, &tenant.token, three).await;
    reply.assert_problem(413, "too_many_events");
    assert!(reply.text.contains("3 events"), "{}", reply.text);
    ingest(
        &app,
        &tenant.token,
        json!([decision("a", "allowed", 1), decision("b", "allowed", 1)]),
    )
    .await
    .assert_status(202);
    assert_eq!(events_of(&app, &tenant).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_locked_account_cannot_ingest() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    app.advance(15 * 24 * 3600);
    let reply = ingest(&app, &tenant.token, json!([])).await;
    reply.assert_problem(402, "locked");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_database_ingest_answers_503_and_stores_nothing_half() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    ingest(&app, &tenant.token, json!([decision("t", "allowed", 3)]))
        .await
        .assert_status(202);
    let batch = json!([
        decision("a", "allowed", 2),
        decision("b", "denied", 2),
        decision("c", "allowed", 2)
    ]);
    // A PostgreSQL outage: the SQLite pass has no database server to lose.
    let Some(db) = app.db().postgres() else {
        return;
    };
    db.disconnect();
    let reply = ingest(&app, &tenant.token, batch.clone()).await;
    reply.assert_problem(503, "service_unavailable");
    assert!(reply.header("retry-after").is_some());
    db.reconnect();
    assert_eq!(
        events_of(&app, &tenant).await.len(),
        1,
        "nothing half-written"
    );
    // The client's retry stores the batch exactly once.
    let retried = ingest(&app, &tenant.token, batch).await;
    assert_eq!(retried.assert_status(202)["accepted"], 3);
    assert_eq!(events_of(&app, &tenant).await.len(), 4);
}

/// Waits (without asserting on time) until `done` holds or a generous deadline passes.
pub(crate) async fn eventually<F: Future<Output = bool>>(mut done: impl FnMut() -> F) -> bool {
    for _ in 0..200 {
        if done().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn accepted_events_are_forwarded_to_logflare_and_a_failing_logflare_changes_nothing() {
    use wiremock::matchers::{header, method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let logflare = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/logs"))
        .and(query_param("source", "source-123"))
        .and(header("x-api-key", "lf-key-secret"))
        .and(header("content-type", "application/json"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&logflare)
        .await;
    let app = TestApp::spawn_with(&[
        ("D2__LOGFLARE__URL", &logflare.uri()),
        ("D2__LOGFLARE__API_KEY", "lf-key-secret"),
        ("D2__LOGFLARE__SOURCE", "source-123"),
        ("D2__LOGFLARE__FLUSH_INTERVAL_MS", "20"),
    ])
    .await;
    app.remember("lf-key-secret");
    let tenant = app.bootstrap().await;
    let batch = json!([decision("a", "allowed", 2), decision("b", "denied", 1)]);
    ingest(&app, &tenant.token, batch.clone())
        .await
        .assert_status(202);
    // The retry is stored once, and forwarded once.
    ingest(&app, &tenant.token, batch).await.assert_status(202);
    let forwarded = || async {
        let requests = logflare.received_requests().await.unwrap_or_default();
        requests
            .iter()
            .map(|r| {
                serde_json::from_slice::<Value>(&r.body).unwrap()["batch"]
                    .as_array()
                    .unwrap()
                    .len()
            })
            .sum::<usize>()
            == 2
    };
    assert!(eventually(forwarded).await, "both events reach Logflare");
    let requests = logflare.received_requests().await.unwrap();
    let entries: Vec<Value> = requests
        .iter()
        .flat_map(|r| {
            serde_json::from_slice::<Value>(&r.body).unwrap()["batch"]
                .as_array()
                .unwrap()
                .clone()
        })
        .collect();
    assert_eq!(entries[0]["message"], "authz_decision");
    assert_eq!(
        entries[0]["metadata"]["account_id"],
        tenant.account_id.as_str()
    );
    assert_eq!(entries[0]["metadata"]["tool"], "a");
    assert_eq!(entries[1]["metadata"]["decision"], "denied");
    let metrics = app
        .send(app.request(Method::GET, "/metrics", None))
        .await
        .text;
    assert!(
        metrics.contains("d2_logflare_events_total{outcome=\"sent\"} 2"),
        "{metrics}"
    );

    // Logflare failing: ingest still answers 202 and stores.
    logflare.reset().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&logflare)
        .await;
    ingest(&app, &tenant.token, json!([decision("c", "allowed", 1)]))
        .await
        .assert_status(202);
    assert_eq!(events_of(&app, &tenant).await.len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_server_token_the_app_comes_from_the_reported_bundle_etag() {
    let app = TestApp::spawn().await;
    let (tenant, dev, publisher) = crate::policy::publishing_tenant(&app).await;
    let published = publisher
        .publish_tools(&app, &dev, "billing", &["reports.read"])
        .await;
    let etag = published["etag"].as_str().unwrap();
    let event = |etag: &str| {
        json!({
            "event_type": "authz_decision",
            "payload": { "tool_id": "reports.read", "result": "allowed", "service": "unknown", "policy_etag": etag },
            "occurred_at": at(1),
        })
    };
    ingest(
        &app,
        &dev,
        json!([event(etag), event("0000"), event(&format!("\"{etag}\""))]),
    )
    .await
    .assert_status(202);
    let events = events_of(&app, &tenant).await;
    let apps: Vec<&Value> = events.iter().map(|e| &e["app_name"]).collect();
    assert_eq!(
        apps.iter().filter(|a| **a == "billing").count(),
        2,
        "a bare or quoted ETag of the account's bundle names its app: {apps:?}"
    );
    assert_eq!(apps.iter().filter(|a| a.is_null()).count(), 1);
    // Another account's ETag names nothing.
    let other = app.bootstrap().await;
    ingest(&app, &other.token, json!([event(etag)]))
        .await
        .assert_status(202);
    assert!(events_of(&app, &other).await[0]["app_name"].is_null());
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_writes_of_every_kind_all_succeed_and_all_are_stored() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let ingests = (0..32).map(|i| {
        let batch = json!([
            decision(&format!("tool-{i}"), "allowed", 3),
            decision(&format!("tool-{i}"), "denied", 2)
        ]);
        ingest(&app, &tenant.token, batch)
    });
    let tokens = format!("/v1/accounts/{}/tokens", tenant.account_id);
    let issues = (0..8).map(|i| {
        let body = json!({ "kind": "dev", "token_name": format!("dev {i}") });
        app.post(&tokens, &tenant.token, body)
    });
    let (ingested, issued) = futures_util::future::join(
        futures_util::future::join_all(ingests),
        futures_util::future::join_all(issues),
    )
    .await;
    for reply in &ingested {
        assert_eq!(reply.assert_status(202)["accepted"], 2, "{}", reply.text);
    }
    for reply in &issued {
        reply.assert_status(201);
    }
    assert_eq!(events_of(&app, &tenant).await.len(), 64);
}
