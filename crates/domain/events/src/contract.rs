//! What every analytics store must answer for the same events (PostgreSQL, ClickHouse and
//! the in-memory reference), with the expected answers worked out by hand.
#![expect(
    clippy::panic,
    reason = "a test suite for adapters: failing loudly is its job"
)]

use std::future::Future;

use chrono::{DateTime, Duration, Utc};
use d2_kernel::{AccountId, AppName, TokenId};
use serde_json::{Value, json};

use crate::analytics::{Bucket, Dimension, TimePoint, TopItem};
use crate::event::{EventFacts, IncomingEvent, NewEvent};
use crate::ports::AnalyticsStore;

/// The start of the window the suite asks about.
pub fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_571_200, 0).unwrap_or_default() // 2026-01-05T00:00:00Z
}

/// An event as ingest would have stored it.
pub fn event(
    account_id: AccountId,
    event_type: &str,
    payload: Value,
    occurred_at: DateTime<Utc>,
    lag_ms: i64,
) -> NewEvent {
    let payload = payload.as_object().cloned().unwrap_or_default();
    let incoming = IncomingEvent {
        event_type: event_type.to_owned(),
        payload: payload.clone(),
        occurred_at,
        client_id: None,
    };
    NewEvent {
        account_id,
        key: NewEvent::key_of(account_id, &incoming),
        token_id: Some(TokenId::random()),
        event_type: event_type.to_owned(),
        occurred_at,
        ingested_at: occurred_at + Duration::milliseconds(lag_ms),
        app_name: Some(AppName::normalise("billing")),
        service: Some("billing".into()),
        host: Some("host-1".into()),
        source_ip: Some("127.0.0.1".into()),
        request_id: None,
        facts: EventFacts::of(event_type, &payload),
        payload: Value::Object(payload),
    }
}

/// The events of the suite: `a` is asked about, `b` must never show.
pub fn dataset(a: AccountId, b: AccountId) -> Vec<NewEvent> {
    let t = t0();
    let m = Duration::minutes;
    vec![
        event(
            a,
            "authz_decision",
            json!({ "result": "allowed", "tool_id": "read", "decision_ms": 2 }),
            t + m(10),
            100,
        ),
        event(
            a,
            "authz_decision",
            json!({ "result": "allowed", "tool_id": "read", "decision_ms": 4 }),
            t + m(20),
            200,
        ),
        event(
            a,
            "authz_decision",
            json!({ "result": "allowed", "tool_id": "read", "decision_ms": 6 }),
            t + m(70),
            300,
        ),
        event(
            a,
            "authz_decision",
            json!({ "result": "denied", "tool_id": "delete", "decision_ms": 1 }),
            t + m(80),
            400,
        ),
        event(
            a,
            "authz_decision",
            json!({ "allowed": false, "resource": "write" }),
            t + m(90),
            500,
        ),
        event(
            a,
            "tool_invoked",
            json!({ "decision": true, "tool_id": "read" }),
            t + m(180),
            600,
        ),
        event(
            a,
            "authz_decision",
            json!({ "result": "maybe", "tool_id": "x" }),
            t + m(185),
            700,
        ),
        event(a, "policy_poll", json!({}), t + m(240), 800),
        event(a, "policy_poll", json!({}), t + m(300), 900),
        // Outside the window.
        event(
            a,
            "authz_decision",
            json!({ "result": "allowed", "tool_id": "read" }),
            t - m(60),
            1000,
        ),
        // Another account.
        event(
            b,
            "authz_decision",
            json!({ "result": "allowed", "tool_id": "other" }),
            t + m(60),
            50,
        ),
        event(
            b,
            "authz_decision",
            json!({ "result": "denied", "tool_id": "other" }),
            t + m(61),
            50,
        ),
    ]
}

fn close(actual: Option<f64>, expected: f64) -> bool {
    actual.is_some_and(|a| (a - expected).abs() < 1e-6)
}

/// Feeds the dataset through `feed` (however events reach the store), then checks every
/// answer.
pub async fn analytics<F, Fut>(store: &dyn AnalyticsStore, feed: F)
where
    F: FnOnce(Vec<NewEvent>) -> Fut,
    Fut: Future<Output = ()>,
{
    let (a, b) = (AccountId::random(), AccountId::random());
    feed(dataset(a, b)).await;
    let (start, end) = (t0(), t0() + Duration::days(1));

    let summary = store
        .summary(a, start, end)
        .await
        .unwrap_or_else(|e| panic!("summary: {e}"));
    assert_eq!(
        (summary.allowed, summary.denied, summary.unique_tools),
        (4, 2, 3),
        "{summary:?}"
    );
    assert!((summary.deny_rate() - 0.3333).abs() < 1e-9, "{summary:?}");
    assert!(close(summary.avg_decision_ms, 3.25), "{summary:?}");
    assert!(close(summary.avg_ingest_lag_ms, 500.0), "{summary:?}");
    let empty = store
        .summary(AccountId::random(), start, end)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (empty.allowed, empty.denied, empty.avg_decision_ms),
        (0, 0, None)
    );

    let hours = store
        .timeseries(a, Bucket::Hour, start, end)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let point = |hours: i64, allowed, denied| TimePoint {
        ts: t0() + Duration::hours(hours),
        allowed,
        denied,
    };
    assert_eq!(hours, vec![point(0, 2, 0), point(1, 1, 2), point(3, 1, 0)]);
    let days = store
        .timeseries(a, Bucket::Day, start, end)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(days, vec![point(0, 4, 2)]);

    let item = |key: &str, count| TopItem {
        key: key.to_owned(),
        count,
    };
    let tools = store
        .top(a, Dimension::Tools, start, end, 2)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(tools.total, 6);
    assert_eq!(tools.items, vec![item("read", 4), item("delete", 1)]);
    let resources = store
        .top(a, Dimension::Resources, start, end, 10)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        resources.items,
        vec![item("read", 4), item("delete", 1), item("write", 1)]
    );
    let types = store
        .top(a, Dimension::EventType, start, end, 10)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(types.total, 9);
    assert_eq!(
        types.items,
        vec![
            item("authz_decision", 6),
            item("policy_poll", 2),
            item("tool_invoked", 1)
        ]
    );

    let theirs = store
        .summary(b, start, end)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (theirs.allowed, theirs.denied, theirs.unique_tools),
        (1, 1, 1)
    );
}
