//! The forwarder against a mock Logflare (wiremock), checking the exact requests.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone as _, Utc};
use d2_events::{EventForwarder as _, NewEvent};
use d2_kernel::AccountId;
use serde_json::{Value, json};
use wiremock::matchers::{body_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::{ForwardStats, LogflareForwarder, LogflareSettings, StartError};

const KEY: &str = "lf-key-5ecret-do-not-print";
const SOURCE: &str = "9dd9a6f6-8e9b-4fa4-b682-4f2f5cd99da3";
const DEADLINE: Duration = Duration::from_secs(10);

fn settings(server: &MockServer) -> LogflareSettings {
    LogflareSettings {
        flush_interval: Duration::from_millis(100),
        timeout: Duration::from_secs(5),
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        ..LogflareSettings::new(server.uri(), KEY, SOURCE)
    }
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap() + chrono::Duration::microseconds(123_456)
}

/// `n` events, told apart by `payload.n`.
fn events(account: AccountId, n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| {
            d2_testkit::fixtures::event(
                account,
                "authz_decision",
                json!({ "n": i, "result": "allowed", "tool_id": "read", "decision_ms": 2.5 }),
                t0() + chrono::Duration::seconds(i64::try_from(i).unwrap()),
                250,
            )
        })
        .collect()
}

fn ok() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({ "message": "Logged!" }))
}

fn logs() -> wiremock::MockBuilder {
    Mock::given(method("POST")).and(path("/api/logs"))
}

async fn requests(server: &MockServer) -> Vec<Request> {
    server.received_requests().await.unwrap()
}

/// The `payload.n` of every event of every request, request by request.
fn numbers(requests: &[Request]) -> Vec<Vec<u64>> {
    requests
        .iter()
        .map(|request| {
            let body: Value = request.body_json().unwrap();
            body["batch"]
                .as_array()
                .unwrap()
                .iter()
                .map(|entry| entry["metadata"]["payload"]["n"].as_u64().unwrap())
                .collect()
        })
        .collect()
}

async fn wait_for(forwarder: &LogflareForwarder, done: impl Fn(&ForwardStats) -> bool) {
    let started = Instant::now();
    while !done(&forwarder.stats()) {
        assert!(
            started.elapsed() < DEADLINE,
            "timed out: {:?}",
            forwarder.stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_is_one_request_in_logflares_batch_format() {
    let server = MockServer::start().await;
    let account = AccountId::random();
    let mut sent = events(account, 3);
    sent[1].event_type = "policy_poll".into();
    sent[1].facts = Default::default();
    sent[1].app_name = None;
    sent[1].token_id = None;
    sent[2].request_id = Some("req-7".into());
    sent[2].facts.decision = Some(d2_events::Decision::Denied);
    let expected = json!({ "batch": sent.iter().enumerate().map(|(i, event)| {
        let occurred_at = format!("2026-11-22T10:00:0{i}.123456Z");
        let ingested_at = format!("2026-11-22T10:00:0{i}.373456Z");
        json!({
            "message": event.event_type,
            "timestamp": occurred_at,
            "metadata": {
                "account_id": account.to_string(),
                "event_type": event.event_type,
                "occurred_at": occurred_at,
                "ingested_at": ingested_at,
                "app_name": if i == 1 { Value::Null } else { json!("billing") },
                "service": "billing",
                "host": "host-1",
                "source_ip": "127.0.0.1",
                "request_id": if i == 2 { json!("req-7") } else { Value::Null },
                "token_id": event.token_id.map(|id| id.to_string()),
                "decision": match i { 0 => json!("allowed"), 1 => Value::Null, _ => json!("denied") },
                "tool": if i == 1 { Value::Null } else { json!("read") },
                "latency_ms": if i == 1 { Value::Null } else { json!(2.5) },
                "payload": { "n": i, "result": "allowed", "tool_id": "read", "decision_ms": 2.5 },
            },
        })
    }).collect::<Vec<_>>() });
    logs()
        .and(query_param("source", SOURCE))
        .and(header("x-api-key", KEY))
        .and(header("content-type", "application/json"))
        .and(body_json(&expected))
        .respond_with(ok())
        .expect(1)
        .mount(&server)
        .await;

    let (forwarder, worker) = LogflareForwarder::start(settings(&server)).unwrap();
    forwarder.forward(&sent);
    // Sent by the flush interval, not by the shutdown.
    wait_for(&forwarder, |stats| stats.sent == 3).await;
    let stats = worker.shutdown(DEADLINE).await;

    let requests = requests(&server).await;
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.url.path(), "/api/logs");
    assert_eq!(
        request.url.query(),
        Some(format!("source={SOURCE}").as_str())
    );
    assert_eq!(request.headers.get("x-api-key").unwrap(), KEY);
    assert_eq!(
        request.headers.get("content-type").unwrap(),
        "application/json"
    );
    assert_eq!(request.body_json::<Value>().unwrap(), expected);
    assert_eq!(
        stats,
        ForwardStats {
            accepted: 3,
            sent: 3,
            sent_batches: 1,
            ..ForwardStats::default()
        }
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn batches_are_cut_at_batch_size_and_keep_the_order() {
    let server = MockServer::start().await;
    logs().respond_with(ok()).mount(&server).await;
    let (forwarder, worker) = LogflareForwarder::start(LogflareSettings {
        batch_size: 2,
        ..settings(&server)
    })
    .unwrap();

    forwarder.forward(&events(AccountId::random(), 5));
    wait_for(&forwarder, |stats| stats.sent == 5).await;
    let stats = worker.shutdown(DEADLINE).await;

    assert_eq!(
        numbers(&requests(&server).await),
        vec![vec![0, 1], vec![2, 3], vec![4]]
    );
    assert_eq!((stats.sent, stats.sent_batches, stats.retries), (5, 3, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn server_errors_are_retried_until_delivered() {
    let server = MockServer::start().await;
    logs()
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(2)
        .expect(2)
        .mount(&server)
        .await;
    logs().respond_with(ok()).expect(1).mount(&server).await;
    let (forwarder, worker) = LogflareForwarder::start(settings(&server)).unwrap();

    forwarder.forward(&events(AccountId::random(), 3));
    wait_for(&forwarder, |stats| stats.sent == 3).await;
    let stats = worker.shutdown(DEADLINE).await;

    let requests = requests(&server).await;
    assert_eq!(numbers(&requests), vec![vec![0, 1, 2]; 3], "the same batch");
    assert!(requests.windows(2).all(|pair| pair[0].body == pair[1].body));
    assert_eq!((stats.sent, stats.retries, stats.failed_batches), (3, 2, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn too_many_requests_waits_for_retry_after() {
    let server = MockServer::start().await;
    let arrivals = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let seen = Arc::clone(&arrivals);
    logs()
        .respond_with(move |_: &Request| {
            let mut seen = seen.lock().unwrap();
            seen.push(Instant::now());
            if seen.len() == 1 {
                ResponseTemplate::new(429).insert_header("retry-after", "1")
            } else {
                ok()
            }
        })
        .expect(2)
        .mount(&server)
        .await;
    let (forwarder, worker) = LogflareForwarder::start(LogflareSettings {
        max_backoff: Duration::from_secs(5),
        ..settings(&server)
    })
    .unwrap();

    forwarder.forward(&events(AccountId::random(), 1));
    wait_for(&forwarder, |stats| stats.sent == 1).await;
    let stats = worker.shutdown(DEADLINE).await;

    assert_eq!((stats.sent, stats.retries), (1, 1));
    let arrivals = arrivals.lock().unwrap();
    // The backoff alone would wait 10 ms. A lower bound only: a sleep never ends early.
    let waited = arrivals[1] - arrivals[0];
    assert!(waited >= Duration::from_secs(1), "retried after {waited:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_is_given_up_after_max_attempts_and_later_events_still_go() {
    let server = MockServer::start().await;
    logs()
        .respond_with(ResponseTemplate::new(503))
        .expect(3)
        .mount(&server)
        .await;
    let (forwarder, worker) = LogflareForwarder::start(LogflareSettings {
        max_attempts: 3,
        ..settings(&server)
    })
    .unwrap();

    forwarder.forward(&events(AccountId::random(), 2));
    wait_for(&forwarder, |stats| stats.failed_batches == 1).await;
    let stats = forwarder.stats();
    assert_eq!((stats.failed_events, stats.retries, stats.sent), (2, 2, 0));
    server.verify().await;

    server.reset().await;
    logs().respond_with(ok()).expect(1).mount(&server).await;
    forwarder.forward(&events(AccountId::random(), 1));
    wait_for(&forwarder, |stats| stats.sent == 1).await;
    let stats = worker.shutdown(DEADLINE).await;
    assert_eq!(
        (
            stats.accepted,
            stats.sent,
            stats.failed_events,
            stats.pending
        ),
        (3, 1, 2, 0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn client_errors_are_not_retried() {
    let server = MockServer::start().await;
    logs()
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({ "message": "bad" })))
        .expect(1)
        .mount(&server)
        .await;
    let (forwarder, worker) = LogflareForwarder::start(settings(&server)).unwrap();

    forwarder.forward(&events(AccountId::random(), 2));
    wait_for(&forwarder, |stats| stats.failed_batches == 1).await;
    let stats = worker.shutdown(DEADLINE).await;

    assert_eq!(requests(&server).await.len(), 1);
    assert_eq!(
        (
            stats.failed_batches,
            stats.failed_events,
            stats.retries,
            stats.sent
        ),
        (1, 2, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_logflare_never_slows_forward_and_a_full_queue_drops_and_counts() {
    let server = MockServer::start().await;
    logs()
        .respond_with(ok().set_delay(Duration::from_millis(300)))
        .mount(&server)
        .await;
    let (forwarder, worker) = LogflareForwarder::start(LogflareSettings {
        queue_capacity: 2,
        batch_size: 1,
        ..settings(&server)
    })
    .unwrap();

    let account = AccountId::random();
    let mut slowest = Duration::ZERO;
    let calls = 200;
    for _ in 0..calls {
        let batch = events(account, 1);
        let started = Instant::now();
        forwarder.forward(&batch);
        slowest = slowest.max(started.elapsed());
    }
    // Each response takes 300 ms; a `forward` that waited for one would show it.
    assert!(
        slowest < Duration::from_millis(100),
        "slowest forward {slowest:?}"
    );
    let during = forwarder.stats();
    assert!(during.dropped_queue_full > 0, "{during:?}");

    let stats = worker.shutdown(DEADLINE).await;
    assert_eq!(stats.sent + stats.dropped_queue_full, calls, "{stats:?}");
    assert_eq!(stats.accepted, stats.sent);
    assert_eq!(
        u64::try_from(requests(&server).await.len()).unwrap(),
        stats.sent
    );
    // After the shutdown nothing is taken, and that is counted too.
    forwarder.forward(&events(account, 2));
    assert_eq!(forwarder.stats().dropped_closed, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_flushes_the_queue() {
    let server = MockServer::start().await;
    logs().respond_with(ok()).expect(2).mount(&server).await;
    let (forwarder, worker) = LogflareForwarder::start(LogflareSettings {
        batch_size: 3,
        flush_interval: Duration::from_secs(3600),
        ..settings(&server)
    })
    .unwrap();

    forwarder.forward(&events(AccountId::random(), 5));
    // A full batch goes at once; the rest waits for the hour-long flush interval.
    wait_for(&forwarder, |stats| stats.sent == 3).await;
    assert_eq!(forwarder.stats().pending, 2);
    let stats = worker.shutdown(DEADLINE).await;

    assert_eq!(
        numbers(&requests(&server).await),
        vec![vec![0, 1, 2], vec![3, 4]]
    );
    assert_eq!((stats.sent, stats.pending, stats.abandoned), (5, 0, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_gives_up_at_the_deadline() {
    let server = MockServer::start().await;
    logs()
        .respond_with(ok().set_delay(Duration::from_secs(30)))
        .mount(&server)
        .await;
    let (forwarder, worker) = LogflareForwarder::start(LogflareSettings {
        flush_interval: Duration::from_secs(3600),
        timeout: Duration::from_secs(60),
        ..settings(&server)
    })
    .unwrap();

    forwarder.forward(&events(AccountId::random(), 4));
    let stats = worker.shutdown(Duration::from_millis(200)).await;
    assert_eq!((stats.accepted, stats.sent, stats.abandoned), (4, 0, 4));
}

/// Records every log event's message and fields as text.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<String>>);

struct Text<'a>(&'a mut String);

impl tracing::field::Visit for Text<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, "{}={value:?} ", field.name());
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        span.record(&mut Text(&mut self.0.lock().unwrap()));
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        values.record(&mut Text(&mut self.0.lock().unwrap()));
    }

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut text = self.0.lock().unwrap();
        event.record(&mut Text(&mut text));
        text.push('\n');
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_key_is_never_printed() {
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(capture.clone());

    let server = MockServer::start().await;
    logs()
        .respond_with(ResponseTemplate::new(401))
        .expect(1)
        .mount(&server)
        .await;
    let rejected = settings(&server);
    assert!(!format!("{rejected:?}").contains(KEY));
    assert!(format!("{rejected:?}").contains("[redacted]"));
    let (forwarder, worker) = LogflareForwarder::start(rejected).unwrap();
    assert!(!format!("{forwarder:?} {worker:?}").contains(KEY));
    forwarder.forward(&events(AccountId::random(), 1));
    wait_for(&forwarder, |stats| stats.failed_batches == 1).await;
    worker.shutdown(DEADLINE).await;

    // A network error: nothing listens on the port any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (forwarder, worker) = LogflareForwarder::start(LogflareSettings {
        max_attempts: 2,
        ..LogflareSettings::new(format!("http://127.0.0.1:{port}"), KEY, SOURCE)
    })
    .unwrap();
    forwarder.forward(&events(AccountId::random(), 1));
    wait_for(&forwarder, |stats| stats.failed_batches == 1).await;
    worker.shutdown(DEADLINE).await;

    let logged = capture.0.lock().unwrap().clone();
    assert!(logged.contains("logflare batch dropped"), "{logged}");
    assert!(logged.contains("401"), "{logged}");
    assert!(!logged.contains(KEY), "{logged}");

    for bad in [
        LogflareSettings::new("not a url", KEY, SOURCE),
        LogflareSettings::new("ftp://example.com", KEY, SOURCE),
        LogflareSettings::new("https://api.logflare.app", format!("{KEY}\n"), SOURCE),
        LogflareSettings {
            queue_capacity: 0,
            ..LogflareSettings::new("https://api.logflare.app", KEY, SOURCE)
        },
    ] {
        let error = LogflareForwarder::start(bad).unwrap_err();
        let text = format!("{error} {error:?} {:?}", std::error::Error::source(&error));
        assert!(text.contains("invalid Logflare setting"), "{text}");
        assert!(!text.contains(KEY), "{text}");
    }
}

#[test]
fn start_needs_a_runtime() {
    let error =
        LogflareForwarder::start(LogflareSettings::new("https://x.test", KEY, SOURCE)).unwrap_err();
    assert!(matches!(error, StartError::NoRuntime(_)), "{error:?}");
}
