//! Events: what every analytics store must answer for the same events (the in-memory
//! reference, PostgreSQL, SQLite, ClickHouse), with the expected answers worked out by hand;
//! the event store's rules (retries, listing, the export stream, pruning); the export
//! checkpoints; refused-event counts.

#![expect(
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "a test suite for adapters: failing loudly is its job"
)]

use std::future::Future;

use chrono::Duration;
use d2_events::{
    AnalyticsStore, Bucket, Dimension, EventFilter, EventStore, ExportBatch, ExportCheckpoint,
    ExportCheckpoints, ExportCursor, NewEvent, RefusedEvents, TimePoint, TopItem, hour_of,
};
use d2_kernel::{AccountId, AppName, PageRequest};
use serde_json::json;

use crate::fixtures::{event, t0};

/// The events of the suite: `a` is asked about, `b` must never show.
fn dataset(a: AccountId, b: AccountId) -> Vec<NewEvent> {
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

/// The event store's rules: retries are not stored twice, listings page newest first
/// without gaps or repeats, the export stream is in the order the events were stored
/// (never their ingest time) and resumes from any cursor, pruning stops at the cursor.
/// `a` and `b` must be accounts the store accepts events for. `until_final` returns once
/// every event stored so far is final, readable by `events_after` (at once where stored
/// events always are; on PostgreSQL, once transactions begun before them have ended).
pub async fn event_store<F, Fut>(store: &dyn EventStore, a: AccountId, b: AccountId, until_final: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    let events = dataset(a, b);
    let keys = store
        .insert_events(&events)
        .await
        .unwrap_or_else(|e| panic!("insert: {e}"));
    assert_eq!(keys.len(), events.len(), "every new event is reported");
    let again = store
        .insert_events(&events)
        .await
        .unwrap_or_else(|e| panic!("insert again: {e}"));
    assert!(
        again.is_empty(),
        "a retried batch stores nothing: {again:?}"
    );
    let fresh = event(a, "policy_poll", json!({ "n": 1 }), t0(), 5);
    let mixed = store
        .insert_events(&[events[0].clone(), fresh.clone()])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        mixed,
        vec![fresh.key],
        "only the new event of a mixed batch"
    );

    // Listing: newest first by ingestion, paged without gaps or repeats, one account only.
    let mut listed = Vec::new();
    let mut page = PageRequest::first(4);
    loop {
        let found = store
            .list_events(a, &EventFilter::default(), &page)
            .await
            .unwrap_or_else(|e| panic!("list: {e}"));
        listed.extend(found.items);
        match found.next {
            Some(cursor) => {
                page = PageRequest::parse(Some(4), Some(&cursor.encode()))
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            None => break,
        }
    }
    let mut expected: Vec<&NewEvent> = events
        .iter()
        .chain([&fresh])
        .filter(|e| e.account_id == a)
        .collect();
    expected.sort_by_key(|e| std::cmp::Reverse(e.ingested_at));
    assert_eq!(
        listed.iter().map(|s| &s.event).collect::<Vec<_>>(),
        expected,
        "newest first, every event of the account once"
    );

    let count = |filter: EventFilter| async move {
        store
            .list_events(a, &filter, &PageRequest::first(100))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .items
            .len()
    };
    let of_type = |t: &str| EventFilter {
        event_type: Some(t.to_owned()),
        ..EventFilter::default()
    };
    assert_eq!(count(of_type("policy_poll")).await, 3);
    assert_eq!(count(of_type("nothing")).await, 0);
    let app = |name: &str| EventFilter {
        app_name: Some(AppName::normalise(name)),
        ..EventFilter::default()
    };
    assert_eq!(count(app("billing")).await, 11);
    assert_eq!(count(app("other")).await, 0);
    let service = EventFilter {
        service: Some("billing".into()),
        ..EventFilter::default()
    };
    assert_eq!(count(service).await, 11);
    let window = EventFilter {
        since: Some(t0()),
        until: Some(t0() + Duration::minutes(80)),
        ..EventFilter::default()
    };
    assert_eq!(
        count(window).await,
        4,
        "since is inclusive, until exclusive"
    );

    // The export stream: every account, in the order stored, whatever the ingest times
    // (the dataset's are not in order, and `fresh`, stored last, was ingested early).
    until_final().await;
    let stream = |after: Option<ExportCursor>, limit: u32| async move {
        store
            .events_after(after, limit)
            .await
            .unwrap_or_else(|e| panic!("events after {after:?}: {e}"))
    };
    let all = stream(None, 1000).await;
    let stored: Vec<&NewEvent> = events.iter().chain([&fresh]).collect();
    assert_eq!(
        all.events.iter().map(|s| &s.event).collect::<Vec<_>>(),
        stored,
        "in the order stored"
    );
    let mut walked = Vec::new();
    let mut after = None;
    loop {
        let batch = stream(after, 3).await;
        if batch.events.is_empty() {
            assert_eq!(batch, ExportBatch::default(), "an empty batch has no end");
            break;
        }
        assert!(batch.events.len() <= 3);
        assert!(batch.end > after, "cursors only move forward");
        walked.extend(batch.events);
        after = batch.end;
    }
    assert_eq!(
        walked, all.events,
        "each batch starts where the previous ended"
    );
    assert_eq!(after, all.end);

    // Stored after the cursor passed, though ingested before every other event (a host
    // whose clock lags, an ingest that took long to commit): next, not behind the cursor.
    let late = event(
        a,
        "policy_poll",
        json!({ "late": true }),
        t0() - Duration::days(1),
        0,
    );
    store
        .insert_events(std::slice::from_ref(&late))
        .await
        .unwrap_or_else(|e| panic!("insert late: {e}"));
    until_final().await;
    let next = stream(all.end, 1000).await;
    assert_eq!(
        next.events.iter().map(|s| &s.event).collect::<Vec<_>>(),
        vec![&late],
        "a late event comes after the cursor"
    );
    assert!(next.end > all.end);

    // Pruning: events up to the cursor ingested before the bound; never one after the
    // cursor, however old (`late` is the oldest of all).
    let first_four = stream(None, 4).await;
    let up_to = first_four.end.unwrap_or_else(|| panic!("four events"));
    let pruned = store
        .prune_events(up_to, all.events[2].event.ingested_at)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        pruned, 2,
        "only events up to the cursor and older than the bound"
    );
    let left = stream(None, 1000).await;
    let mut expected = all.events[2..].to_vec();
    expected.extend(next.events);
    assert_eq!(left.events, expected, "the unexported event stays");
    refusals(store, a, b).await;
}

/// The export checkpoints: one per job, overwritten, kept whole (positions past 32 bits,
/// times to the microsecond).
pub async fn checkpoints(store: &dyn ExportCheckpoints) {
    let load = async |job: &str| {
        store
            .load(job)
            .await
            .unwrap_or_else(|e| panic!("load {job}: {e}"))
    };
    assert_eq!(load("analytics-export").await, None);
    let first = ExportCheckpoint {
        cursor: ExportCursor {
            position: 5_000_000_000,
            id: 7,
        },
        ingested_at: t0() + Duration::microseconds(123_456),
    };
    let second = ExportCheckpoint {
        cursor: ExportCursor {
            position: 5_000_000_001,
            id: 3,
        },
        ..first
    };
    for checkpoint in [first, second] {
        store
            .save("analytics-export", checkpoint)
            .await
            .unwrap_or_else(|e| panic!("save: {e}"));
    }
    assert_eq!(load("analytics-export").await, Some(second));
    assert_eq!(load("other").await, None, "each job has its own");
}

/// Refused-event counts add up per (account, hour) and are read by window and account.
pub async fn refusals(store: &dyn EventStore, a: AccountId, b: AccountId) {
    let hour = |h: i64| hour_of(t0()) + Duration::hours(h);
    let row = |account_id, h, events| RefusedEvents {
        account_id,
        hour: hour(h),
        events,
        batches: 1,
    };
    store
        .add_refusals(&[row(a, 0, 100), row(a, 1, 20), row(b, 0, 7)])
        .await
        .unwrap_or_else(|e| panic!("add refusals: {e}"));
    store
        .add_refusals(&[row(a, 0, 5)])
        .await
        .unwrap_or_else(|e| panic!("add to existing refusals: {e}"));
    let read = |account, from, to| async move {
        store
            .refused_events(account, hour(from), hour(to))
            .await
            .unwrap_or_else(|e| panic!("read refusals: {e}"))
    };
    assert_eq!(read(a, 0, 2).await, 125, "both hours, added up");
    assert_eq!(read(a, 0, 1).await, 105, "the window ends before hour 1");
    assert_eq!(read(a, 1, 5).await, 20);
    assert_eq!(read(b, 0, 5).await, 7, "one account's counts only");
    assert_eq!(read(a, 2, 5).await, 0);
}
