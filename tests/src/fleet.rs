//! Fleets: one server token deployed to every pod of a service. The poll is never refused
//! to a well-behaved fleet, telemetry is limited per account by events (not requests),
//! quotas hold across replicas through Redis, and a replica that loses Redis keeps serving.

use futures_util::StreamExt as _;
use reqwest::Method;
use serde_json::{Value, json};

use crate::events::{decision, eventually, ingest};
use crate::harness::{OwnRedis, Reply, Tenant, TestApp};
use crate::policy::{publishing_tenant, server_token};

/// How many requests the simulated pods keep in flight at once (a client-side limit of
/// open sockets, not a server one).
const IN_FLIGHT: usize = 250;

fn rate_limit(reply: &Reply) -> (u64, u64, u64) {
    let number = |name: &str| {
        reply
            .header(name)
            .unwrap_or_else(|| panic!("{name} missing: {:?}", reply.headers))
            .parse::<u64>()
            .unwrap()
    };
    (
        number("x-ratelimit-limit"),
        number("x-ratelimit-remaining"),
        number("x-ratelimit-reset"),
    )
}

/// `n` batches of `size` events, each an SDK instance's flush.
fn batches(n: usize, size: usize) -> Vec<Value> {
    (0..n)
        .map(|pod| {
            Value::Array(
                (0..size)
                    .map(|i| decision(&format!("tool-{pod}-{i}"), "allowed", 1))
                    .collect(),
            )
        })
        .collect()
}

async fn ingest_all(app: &TestApp, token: &str, batches: Vec<Value>) -> Vec<Reply> {
    futures_util::stream::iter(batches)
        .map(|batch| ingest(app, token, batch))
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await
}

async fn summary(app: &TestApp, tenant: &Tenant) -> Value {
    app.get("/v1/metrics/summary", &tenant.token)
        .await
        .assert_status(200)
        .clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_pods_sharing_one_server_token_all_get_their_bundle_then_poll_304() {
    let app = TestApp::spawn().await;
    let (tenant, dev, publisher) = publishing_tenant(&app).await;
    publisher.publish_tools(&app, &dev, "billing", &["a"]).await;
    let server = server_token(&app, &tenant, "billing").await;

    let starts: Vec<Reply> = futures_util::stream::iter(0..1000)
        .map(|_| app.get("/v1/policy/bundle", &server))
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let mut etags = std::collections::HashSet::new();
    for reply in &starts {
        reply.assert_status(200);
        assert_eq!(reply.header("x-d2-poll-seconds"), Some("300"));
        etags.insert(reply.header("etag").unwrap().to_owned());
        let (limit, remaining, _) = rate_limit(reply);
        assert_eq!(limit, 5000, "the default poll ceiling's burst");
        assert!(remaining < limit);
    }
    assert_eq!(etags.len(), 1, "every pod got the same bundle");
    let etag = etags.into_iter().next().unwrap();

    // Then each pod polls at the advised interval with its ETag: 304 for all of them.
    let polls: Vec<Reply> = futures_util::stream::iter(0..1000)
        .map(|_| {
            let request = app
                .request(Method::GET, "/v1/policy/bundle", Some(&server))
                .header("If-None-Match", etag.clone());
            app.send(request)
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    for reply in &polls {
        assert_eq!(reply.status.as_u16(), 304, "{}", reply.text);
        rate_limit(reply);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_over_the_poll_ceiling_gets_429_with_retry_after_and_other_tokens_are_unaffected() {
    let app = TestApp::spawn_with(&[
        ("D2__POLICY__POLL_CEILING_PER_SECOND", "1"),
        ("D2__POLICY__POLL_CEILING_BURST", "20"),
    ])
    .await;
    let (tenant, dev, publisher) = publishing_tenant(&app).await;
    publisher.publish_tools(&app, &dev, "billing", &["a"]).await;
    let server = server_token(&app, &tenant, "billing").await;
    let replies: Vec<Reply> = futures_util::stream::iter(0..60)
        .map(|_| app.get("/v1/policy/bundle", &server))
        .buffer_unordered(16)
        .collect()
        .await;
    let served = replies.iter().filter(|r| r.status == 200).count();
    assert!(
        (20..=25).contains(&served),
        "the burst of 20 (and at most a few refilled): {served}"
    );
    let refused: Vec<&Reply> = replies.iter().filter(|r| r.status == 429).collect();
    assert_eq!(served + refused.len(), 60);
    for reply in refused {
        reply.assert_problem(429, "rate_limited");
        assert_eq!(reply.header("retry-after"), Some("1"));
        assert_eq!(rate_limit(reply).0, 20);
    }
    let other = server_token(&app, &tenant, "billing").await;
    app.get("/v1/policy/bundle", &other)
        .await
        .assert_status(200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_pods_sharing_one_token_all_deliver_their_telemetry() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap().await;
    let (tenant_server, _) = app
        .issue(&tenant, json!({ "kind": "server", "app_name": "billing" }))
        .await;
    let replies = ingest_all(&app, &tenant_server, batches(100, 5)).await;
    for reply in &replies {
        assert_eq!(reply.assert_status(202)["accepted"], 5, "{}", reply.text);
        let (limit, remaining, _) = rate_limit(reply);
        assert_eq!(limit, 10_000, "the trial's events per minute");
        assert!(remaining >= 10_000 - 500);
    }
    let totals = summary(&app, &tenant).await;
    assert_eq!(totals["total_authorizations"], 500);
    assert_eq!(totals["events_refused"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn over_the_account_quota_batches_are_refused_whole_counted_and_shown_to_the_owner() {
    let app = TestApp::spawn_with(&[
        ("D2__PLANS__TRIAL__INGEST_EVENTS_PER_MINUTE", "100"),
        ("D2__PLANS__TRIAL__EVENT_BATCH", "40"),
    ])
    .await;
    let tenant = app.bootstrap().await;
    let me = app.get("/v1/accounts/me", &tenant.token).await;
    assert_eq!(
        me.assert_status(200)["quotas"]["ingest_events_per_minute"],
        100
    );
    // Two tokens of one account share its quota: it is the account's, not a token's.
    let (first, _) = app.issue(&tenant, json!({ "kind": "dev" })).await;
    let (second, _) = app.issue(&tenant, json!({ "kind": "dev" })).await;
    let mut pods = batches(4, 40).into_iter();
    let accepted = ingest(&app, &first, pods.next().unwrap()).await;
    accepted.assert_status(202);
    assert_eq!(rate_limit(&accepted).0, 100);
    assert_eq!(rate_limit(&accepted).1, 60);
    assert!(rate_limit(&accepted).2 >= 1);
    ingest(&app, &second, pods.next().unwrap())
        .await
        .assert_status(202);
    let refused = ingest(&app, &first, pods.next().unwrap()).await;
    refused.assert_problem(429, "rate_limited");
    let (limit, remaining, _) = rate_limit(&refused);
    assert_eq!(
        (limit, remaining),
        (100, 20),
        "a refused batch spends nothing"
    );
    let retry_after: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert!(
        refused.body["detail"]
            .as_str()
            .unwrap()
            .contains("100 events per minute")
    );
    // A batch that fits the rest still passes.
    ingest(&app, &second, batches(1, 20).remove(0))
        .await
        .assert_status(202);
    ingest(&app, &second, pods.next().unwrap())
        .await
        .assert_problem(429, "rate_limited");

    // Nothing of the refused batches is stored, and the owner sees what was lost.
    let shown = eventually(|| async { summary(&app, &tenant).await["events_refused"] == 80 }).await;
    assert!(shown, "{}", summary(&app, &tenant).await);
    assert_eq!(summary(&app, &tenant).await["total_authorizations"], 100);
}

/// Two replicas, one Redis: the account's quota is one quota. Without Redis each replica
/// counts alone.
#[tokio::test(flavor = "multi_thread")]
async fn replicas_sharing_redis_enforce_one_account_quota() {
    let redis = OwnRedis::start();
    let quota = [
        ("D2__PLANS__TRIAL__INGEST_EVENTS_PER_MINUTE", "100"),
        ("D2__PLANS__TRIAL__EVENT_BATCH", "50"),
    ];
    let shared = [quota[0], quota[1], ("D2__REDIS__URL", redis.url().leak())];
    let first = TestApp::spawn_with(&shared).await;
    let second = first.replica(&shared).await;
    let tenant = first.bootstrap().await;
    let mut pods = batches(3, 50).into_iter();
    ingest(&first, &tenant.token, pods.next().unwrap())
        .await
        .assert_status(202);
    let through_second = ingest(&second, &tenant.token, pods.next().unwrap()).await;
    through_second.assert_status(202);
    assert_eq!(
        rate_limit(&through_second).1,
        0,
        "the second replica saw the first's spend"
    );
    ingest(&first, &tenant.token, pods.next().unwrap())
        .await
        .assert_problem(429, "rate_limited");

    // The same traffic without Redis: each replica admits its own 100.
    let alone = first.replica(&quota).await;
    let other = first.replica(&quota).await;
    let tenant = alone.bootstrap().await;
    for app in [&alone, &other, &alone, &other] {
        ingest(app, &tenant.token, batches(1, 50).remove(0))
            .await
            .assert_status(202);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_that_loses_redis_keeps_serving_on_local_limits_and_says_so_in_metrics() {
    let redis = OwnRedis::start();
    let app = TestApp::spawn_with(&[
        ("D2__PLANS__TRIAL__INGEST_EVENTS_PER_MINUTE", "1000"),
        ("D2__REDIS__URL", redis.url().leak()),
        ("D2__REDIS__RETRY_MS", "200"),
    ])
    .await;
    let tenant = app.bootstrap().await;
    let metric = |text: &str, name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .map(|v| v.trim().to_owned())
    };
    ingest(&app, &tenant.token, batches(1, 10).remove(0))
        .await
        .assert_status(202);
    let before = app.get("/metrics", "").await.text;
    assert_eq!(metric(&before, "d2_redis_available").as_deref(), Some("1"));

    redis.stop();
    let replies = ingest_all(&app, &tenant.token, batches(30, 10)).await;
    for reply in &replies {
        reply.assert_status(202);
        rate_limit(reply);
    }
    let during = app.get("/metrics", "").await.text;
    assert_eq!(metric(&during, "d2_redis_available").as_deref(), Some("0"));
    assert_eq!(
        metric(&during, "d2_redis_outages_total").as_deref(),
        Some("1"),
        "one outage, however many requests"
    );
    assert_ne!(
        metric(&during, "d2_quota_local_decisions_total").as_deref(),
        Some("0")
    );
    // Local limits still hold: 1000 per minute, of which 310 are spent (or fewer here).
    let flood = ingest_all(&app, &tenant.token, batches(100, 10)).await;
    assert!(
        flood.iter().any(|r| r.status == 429),
        "the local bucket limits"
    );
    assert!(flood.iter().all(|r| r.status == 202 || r.status == 429));

    redis.restart();
    let back = eventually(|| async {
        ingest(&app, &tenant.token, batches(1, 1).remove(0)).await;
        metric(&app.get("/metrics", "").await.text, "d2_redis_available").as_deref() == Some("1")
    })
    .await;
    assert!(back, "the replica returns to Redis once it answers");
}
