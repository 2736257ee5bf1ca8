//! Against a real ClickHouse server (`scripts/clickhouse.sh start`); each test has its own
//! database, dropped afterwards.
#![expect(clippy::panic, reason = "tests fail loudly")]

use std::error::Error as _;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use d2_events::memory::MemoryEvents;
use d2_events::{
    AnalyticsSink as _, AnalyticsStore, Bucket, Dimension, EventStore as _, NewEvent, StoredEvent,
    Summary,
};
use d2_kernel::{AccountId, StoreError};
use d2_testkit::fixtures::{event, t0};
use d2_testkit::suites::events::analytics;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::client::number;
use crate::{ClickHouse, ClickHouseSettings};

fn server_url() -> String {
    if let Ok(url) = std::env::var("D2_TEST_CLICKHOUSE_URL") {
        return url;
    }
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../target/clickhouse/url");
    match std::fs::read_to_string(&file) {
        Ok(url) if !url.trim().is_empty() => url.trim().to_owned(),
        _ => panic!(
            "no ClickHouse server for the tests: run `scripts/clickhouse.sh start` \
             (or set D2_TEST_CLICKHOUSE_URL)"
        ),
    }
}

/// A database of its own, dropped when the test ends (also when it fails).
struct TestDb {
    store: ClickHouse,
    settings: ClickHouseSettings,
}

impl TestDb {
    async fn new() -> Self {
        let name = format!("d2_test_{}", AccountId::random().as_uuid().simple());
        let mut settings = ClickHouseSettings::new(server_url(), name);
        settings.timeout = Duration::from_secs(30);
        let store = ClickHouse::new(settings.clone()).unwrap();
        if let Err(e) = store.prepare().await {
            panic!(
                "cannot prepare a test database on {} ({e}: {:?}); is it running? \
                 `scripts/clickhouse.sh start`",
                settings.url,
                e.source()
            );
        }
        Self { store, settings }
    }

    async fn count(&self, final_: &str) -> u64 {
        #[derive(Deserialize)]
        struct Row {
            #[serde(deserialize_with = "number::u64")]
            n: u64,
        }
        let sql = format!(
            "SELECT count() AS n FROM {} {final_} FORMAT JSON",
            self.store.rows_table()
        );
        let answer = self.store.query::<Row>("count", sql).await.unwrap();
        answer.data.first().unwrap().n
    }

    /// The events `event_counts` counts.
    async fn counted(&self) -> u64 {
        #[derive(Deserialize)]
        struct Row {
            #[serde(deserialize_with = "number::u64")]
            n: u64,
        }
        let sql = format!(
            "SELECT sum(events) AS n FROM {} FORMAT JSON",
            self.store.counts_table()
        );
        let answer = self.store.query::<Row>("counted", sql).await.unwrap();
        answer.data.first().unwrap().n
    }

    /// Merges every part, as the background would eventually.
    async fn optimize(&self) {
        for table in [self.store.rows_table(), self.store.counts_table()] {
            self.store
                .execute("optimize", format!("OPTIMIZE TABLE {table} FINAL"))
                .await
                .unwrap();
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop cannot await, and the test's runtime may be the one this thread is blocking:
        // drop the database from a thread of its own, with a client of its own.
        let settings = self.settings.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let store = ClickHouse::new(settings).unwrap();
            let sql = format!("DROP DATABASE IF EXISTS {}", store.database.quoted());
            runtime.block_on(store.execute("drop test database", sql))
        })
        .join();
        if !std::thread::panicking() {
            dropped.unwrap().unwrap();
        }
    }
}

/// As the worker exports them: ids from PostgreSQL, here 1..=n.
fn stored(events: Vec<NewEvent>) -> Vec<StoredEvent> {
    events
        .into_iter()
        .zip(1..)
        .map(|(event, id)| StoredEvent { id, event })
        .collect()
}

/// A varied batch for one account, deterministic.
fn batch(account: AccountId, n: u32) -> Vec<NewEvent> {
    let (types, results, tools) = (
        ["authz_decision", "tool_invoked", "policy_poll"],
        ["allowed", "denied", "maybe"],
        ["read", "write", "delete", "", "search"],
    );
    (0..n)
        .map(|i| {
            let pick = |len: usize, salt: u32| {
                usize::try_from(i.wrapping_mul(2_654_435_761).wrapping_add(salt) % 97).unwrap()
                    % len
            };
            let mut payload = json!({
                "result": results[pick(3, 1)],
                "tool_id": tools[pick(5, 7)],
            });
            if pick(2, 3) == 0 {
                payload["decision_ms"] = json!(f64::from(i % 13) + 0.25);
            }
            event(
                account,
                types[pick(3, 11)],
                payload,
                t0() + chrono::Duration::minutes(i64::from(i) * 17),
                i64::from(i % 50) * 10,
            )
        })
        .collect()
}

fn same_summary(actual: &Summary, expected: &Summary) {
    let close = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() < 1e-6,
        (a, b) => a == b,
    };
    assert_eq!(
        (actual.allowed, actual.denied, actual.unique_tools),
        (expected.allowed, expected.denied, expected.unique_tools),
        "{actual:?} != {expected:?}"
    );
    assert!(
        close(actual.avg_decision_ms, expected.avg_decision_ms)
            && close(actual.avg_ingest_lag_ms, expected.avg_ingest_lag_ms),
        "{actual:?} != {expected:?}"
    );
}

/// Every answer of `store` for `account` equals the reference's.
async fn same_answers(
    store: &dyn AnalyticsStore,
    reference: &MemoryEvents,
    account: AccountId,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) {
    same_summary(
        &store.summary(account, start, end).await.unwrap(),
        &reference.summary(account, start, end).await.unwrap(),
    );
    for bucket in [Bucket::Hour, Bucket::Day] {
        assert_eq!(
            store.timeseries(account, bucket, start, end).await.unwrap(),
            reference
                .timeseries(account, bucket, start, end)
                .await
                .unwrap(),
            "{bucket:?}"
        );
    }
    for dimension in [Dimension::Tools, Dimension::Resources, Dimension::EventType] {
        for n in [0, 1, 2, 3, 100] {
            assert_eq!(
                store.top(account, dimension, start, end, n).await.unwrap(),
                reference
                    .top(account, dimension, start, end, n)
                    .await
                    .unwrap(),
                "{dimension:?} top {n}"
            );
        }
    }
}

#[tokio::test]
async fn the_analytics_contract_holds_with_retried_exports() {
    let db = TestDb::new().await;
    let sink = &db.store;
    analytics(&db.store, |events| async move {
        let events = stored(events);
        sink.write(&events).await.unwrap();
        // The worker crashed before its checkpoint and exports the same batch again.
        sink.write(&events).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn overlapping_retries_change_no_answer() {
    let db = TestDb::new().await;
    let account = AccountId::random();
    let events = stored(batch(account, 120));
    let reference = MemoryEvents::default();
    reference
        .insert_events(&events.iter().map(|s| s.event.clone()).collect::<Vec<_>>())
        .await
        .unwrap();
    let (start, end) = (t0(), t0() + chrono::Duration::days(3));

    db.store.write(events.get(..80).unwrap()).await.unwrap();
    db.store.write(events.get(50..).unwrap()).await.unwrap();
    same_answers(&db.store, &reference, account, start, end).await;
    let summary = db.store.summary(account, start, end).await.unwrap();
    let types = db
        .store
        .top(account, Dimension::EventType, start, end, 10)
        .await
        .unwrap();
    assert_eq!(types.total, 120);

    db.store.write(&events).await.unwrap();
    db.store.write(events.get(10..20).unwrap()).await.unwrap();
    same_answers(&db.store, &reference, account, start, end).await;
    same_summary(
        &db.store.summary(account, start, end).await.unwrap(),
        &summary,
    );
    assert_eq!(
        db.store
            .top(account, Dimension::EventType, start, end, 10)
            .await
            .unwrap(),
        types
    );
    assert_eq!(db.count("FINAL").await, 120, "one row per id");
    assert!(db.count("").await >= 120);
}

#[tokio::test]
async fn prepare_is_idempotent() {
    let db = TestDb::new().await;
    let account = AccountId::random();
    db.store.prepare().await.unwrap();
    db.store.write(&stored(batch(account, 10))).await.unwrap();
    db.store.prepare().await.unwrap();
    assert_eq!(db.count("FINAL").await, 10, "prepare keeps the data");
    db.store.write(&[]).await.unwrap();
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable() {
    // Port 1 on loopback: nothing listens there, the connection is refused at once.
    let mut settings = ClickHouseSettings::new("http://127.0.0.1:1", "d2");
    settings.timeout = Duration::from_secs(5);
    let store = ClickHouse::new(settings).unwrap();
    let (start, end) = (t0(), t0() + chrono::Duration::days(1));
    let account = AccountId::random();
    assert!(matches!(
        store.prepare().await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.write(&stored(batch(account, 2))).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.summary(account, start, end).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.top(account, Dimension::Tools, start, end, 5).await,
        Err(StoreError::Unavailable(_))
    ));
}

/// The error and its whole chain of sources, as a log line would show them.
fn chain(error: &StoreError) -> String {
    let mut text = format!("{error} / {error:?}");
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(" / {cause}"));
        source = cause.source();
    }
    text
}

#[tokio::test]
async fn server_errors_are_internal_and_keep_sql_and_secrets_out() {
    let db = TestDb::new().await;

    // A statement ClickHouse rejects.
    let error = db
        .store
        .execute("probe", "SELEC 'marker-of-the-sql-text'")
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Internal(_)), "{error:?}");
    let text = chain(&error);
    assert!(text.contains("Code: 62"), "{text}");
    assert!(!text.contains("marker-of-the-sql-text"), "{text}");

    // Rows ClickHouse cannot parse: the rows are not echoed either.
    let error = db
        .store
        .execute(
            "probe",
            format!(
                "INSERT INTO {} FORMAT JSONEachRow\n{{\"id\": \"marker-of-a-row\"}}\n",
                db.store.rows_table()
            ),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Internal(_)), "{error:?}");
    assert!(
        !chain(&error).contains("marker-of-a-row"),
        "{}",
        chain(&error)
    );

    // A wrong password.
    let mut settings = db.settings.clone();
    settings.user = Some("default".into());
    settings.password = Some("hunter2-not-the-password".into());
    let wrong = ClickHouse::new(settings).unwrap();
    assert!(!format!("{wrong:?}").contains("hunter2"));
    let error = wrong
        .summary(AccountId::random(), t0(), t0())
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Internal(_)), "{error:?}");
    let text = chain(&error);
    assert!(text.contains("Code: "), "{text}");
    assert!(!text.contains("hunter2"), "{text}");

    // A database that was never prepared.
    let missing = ClickHouse::new(ClickHouseSettings::new(
        server_url(),
        format!("d2_missing_{}", AccountId::random().as_uuid().simple()),
    ))
    .unwrap();
    let error = missing
        .top(AccountId::random(), Dimension::Tools, t0(), t0(), 3)
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Internal(_)), "{error:?}");
}

#[test]
fn bad_settings_are_refused() {
    for (url, database) in [
        ("ftp://127.0.0.1", "d2"),
        ("not a url", "d2"),
        ("http://127.0.0.1:8123", "d2; DROP TABLE x"),
        ("http://127.0.0.1:8123", ""),
    ] {
        assert!(
            matches!(
                ClickHouse::new(ClickHouseSettings::new(url, database)),
                Err(StoreError::Internal(_))
            ),
            "{url} {database}"
        );
    }
}

#[tokio::test]
async fn other_accounts_never_show() {
    let db = TestDb::new().await;
    let (a, b, c) = (
        AccountId::random(),
        AccountId::random(),
        AccountId::random(),
    );
    let mut events = batch(a, 60);
    events.extend(batch(b, 60).into_iter().map(|mut event| {
        if let Some(tool) = event.facts.tool.as_mut() {
            tool.insert_str(0, "b-");
        }
        event.event_type.insert_str(0, "b_");
        event
    }));
    let events = stored(events);
    db.store.write(&events).await.unwrap();
    let reference = MemoryEvents::default();
    reference
        .insert_events(&events.iter().map(|s| s.event.clone()).collect::<Vec<_>>())
        .await
        .unwrap();
    let (start, end) = (t0(), t0() + chrono::Duration::days(3));
    for account in [a, b, c] {
        same_answers(&db.store, &reference, account, start, end).await;
    }
    for dimension in [Dimension::Tools, Dimension::EventType] {
        let top = db.store.top(a, dimension, start, end, 100).await.unwrap();
        assert!(top.items.iter().all(|item| !item.key.starts_with("b")));
        assert_eq!(
            db.store.top(c, dimension, start, end, 100).await.unwrap(),
            d2_events::Top::default()
        );
    }
    assert_eq!(
        db.store.summary(c, start, end).await.unwrap(),
        Summary::default()
    );
    assert!(
        db.store
            .timeseries(c, Bucket::Hour, start, end)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn windows_are_exact_to_the_microsecond_and_buckets_are_utc() {
    let db = TestDb::new().await;
    let account = AccountId::random();
    let (start, end) = (t0(), t0() + chrono::Duration::hours(30));
    let micro = chrono::Duration::microseconds(1);
    let allowed = json!({ "result": "allowed", "tool_id": "read" });
    let events = stored(
        [
            start - micro,
            start,
            start + chrono::Duration::minutes(59) + chrono::Duration::seconds(59),
            end - micro,
            end,
            // Before 1970: outside `DateTime`, still bucketed and windowed exactly.
            DateTime::from_timestamp(-5_400, 0).unwrap(),
        ]
        .into_iter()
        .map(|at| event(account, "authz_decision", allowed.clone(), at, 5))
        .collect(),
    );
    db.store.write(&events).await.unwrap();
    let reference = MemoryEvents::default();
    reference
        .insert_events(&events.iter().map(|s| s.event.clone()).collect::<Vec<_>>())
        .await
        .unwrap();
    same_answers(&db.store, &reference, account, start, end).await;
    assert_eq!(
        db.store.summary(account, start, end).await.unwrap().allowed,
        3
    );
    let epoch = DateTime::from_timestamp(0, 0).unwrap();
    let early = (
        epoch - chrono::Duration::days(1),
        epoch + chrono::Duration::days(1),
    );
    same_answers(&db.store, &reference, account, early.0, early.1).await;
    let hours = db
        .store
        .timeseries(account, Bucket::Hour, early.0, early.1)
        .await
        .unwrap();
    assert_eq!(
        hours.first().map(|p| p.ts),
        DateTime::from_timestamp(-7_200, 0)
    );
}

#[tokio::test]
async fn awkward_text_round_trips() {
    let db = TestDb::new().await;
    let account = AccountId::random();
    let awkward = [
        "quote\"double",
        "quote'single",
        "back\\slash",
        "new\nline\ttab\r",
        "ünïcödé 😀 中文",
        "x'); DROP DATABASE d2; --",
        "control\u{1}\u{7f}",
        "",
    ];
    let events = stored(
        awkward
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let payload =
                    json!({ "result": "denied", "tool_id": text, "note": text, "n": [i] });
                let mut event = event(account, "authz_decision", payload, t0(), 1);
                event.event_type = (*text).to_owned();
                // An authorization whatever its type, so it counts under tools too.
                event.facts.decision = Some(d2_events::Decision::Denied);
                event
            })
            .collect(),
    );
    db.store.write(&events).await.unwrap();
    let (start, end) = (t0(), t0() + chrono::Duration::hours(1));
    let mut expected: Vec<&str> = awkward.to_vec();
    expected.sort_unstable();
    for dimension in [Dimension::Tools, Dimension::EventType] {
        let top = db
            .store
            .top(account, dimension, start, end, 100)
            .await
            .unwrap();
        let keys: Vec<&str> = top.items.iter().map(|item| item.key.as_str()).collect();
        assert_eq!(keys, expected, "{dimension:?}");
        assert_eq!(top.total, 8);
    }
    let reference = MemoryEvents::default();
    reference
        .insert_events(&events.iter().map(|s| s.event.clone()).collect::<Vec<_>>())
        .await
        .unwrap();
    same_answers(&db.store, &reference, account, start, end).await;

    #[derive(Deserialize)]
    struct Row {
        #[serde(deserialize_with = "number::i64")]
        id: i64,
        payload: String,
    }
    let sql = format!(
        "SELECT id, payload FROM {} FINAL ORDER BY id FORMAT JSON",
        db.store.rows_table()
    );
    let rows = db.store.query::<Row>("payloads", sql).await.unwrap().data;
    assert_eq!(rows.len(), events.len());
    for (row, event) in rows.iter().zip(&events) {
        assert_eq!(row.id, event.id);
        assert_eq!(
            serde_json::from_str::<Value>(&row.payload).unwrap(),
            event.event.payload
        );
    }
}

/// Windows whose edges fall inside hours (answered from rows), on hours, or both.
fn windows() -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let (minute, micro) = (
        chrono::Duration::minutes(1),
        chrono::Duration::microseconds(1),
    );
    vec![
        (t0(), t0() + chrono::Duration::days(3)),
        (
            t0() + minute * 7 + micro,
            t0() + chrono::Duration::hours(29) - micro,
        ),
        (t0() - minute * 30, t0() + minute * 200),
        (t0() + minute * 61, t0() + minute * 62),
        (t0() + minute * 5, t0() + minute * 5),
    ]
}

async fn same_answers_everywhere(db: &TestDb, reference: &MemoryEvents, account: AccountId) {
    for (start, end) in windows() {
        same_answers(&db.store, reference, account, start, end).await;
    }
}

#[tokio::test]
async fn a_re_exported_batch_changes_no_answer() {
    let db = TestDb::new().await;
    let account = AccountId::random();
    let events = stored(batch(account, 150));
    let reference = MemoryEvents::default();
    reference
        .insert_events(&events.iter().map(|s| s.event.clone()).collect::<Vec<_>>())
        .await
        .unwrap();

    db.store.write(&events).await.unwrap();
    same_answers_everywhere(&db, &reference, account).await;
    // The worker died between the write and its checkpoint: the same batch again, twice.
    db.store.write(&events).await.unwrap();
    db.store.write(&events).await.unwrap();
    same_answers_everywhere(&db, &reference, account).await;
    assert_eq!(db.counted().await, 150, "each event counted once");
    assert_eq!(db.count("").await, 150, "nothing written again");
    // Merged or not, the answers stay.
    db.optimize().await;
    same_answers_everywhere(&db, &reference, account).await;
}

#[tokio::test]
async fn a_write_that_died_between_its_two_inserts_is_completed_by_the_retry() {
    let db = TestDb::new().await;
    let account = AccountId::random();
    let events = stored(batch(account, 90));
    let reference = MemoryEvents::default();
    reference
        .insert_events(&events.iter().map(|s| s.event.clone()).collect::<Vec<_>>())
        .await
        .unwrap();
    db.store.write(events.get(..30).unwrap()).await.unwrap();
    // The rows of the next 40 reached ClickHouse, their counts did not.
    let (start, end) = (t0(), t0() + chrono::Duration::days(3));
    let next: Vec<&StoredEvent> = events.get(30..70).unwrap().iter().collect();
    db.store.write_rows(&next).await.unwrap();
    db.store.write(events.get(30..70).unwrap()).await.unwrap();
    db.store.write(&events).await.unwrap();
    same_answers_everywhere(&db, &reference, account).await;
    same_answers(&db.store, &reference, account, start, end).await;
    assert_eq!(db.counted().await, 90);
}

#[tokio::test]
async fn prepare_migrates_the_former_events_table() {
    let db = TestDb::new().await;
    let account = AccountId::random();
    let events = stored(batch(account, 200));
    let reference = MemoryEvents::default();
    reference
        .insert_events(&events.iter().map(|s| s.event.clone()).collect::<Vec<_>>())
        .await
        .unwrap();
    // A deployment of the former schema: one `events` table, with a retried batch's copies,
    // and ids with gaps.
    let some: Vec<StoredEvent> = events.iter().filter(|e| e.id % 7 != 3).cloned().collect();
    db.store.write(&some).await.unwrap();
    let database = db.store.database.quoted();
    let legacy = format!("{database}.`events`");
    for sql in [
        format!(
            "CREATE TABLE {legacy} ({}) {}",
            crate::sink::ROWS_COLUMNS,
            crate::sink::LEGACY_ENGINE
        ),
        format!("INSERT INTO {legacy} SELECT * FROM {database}.`event_rows`"),
        format!("INSERT INTO {legacy} SELECT * FROM {database}.`event_rows` WHERE id < 50"),
        format!("DROP TABLE {database}.`event_rows`"),
        format!("DROP TABLE {database}.`event_counts`"),
    ] {
        db.store.execute("legacy", sql).await.unwrap();
    }

    db.store.prepare().await.unwrap();
    db.store.prepare().await.unwrap();
    let migrated = MemoryEvents::default();
    migrated
        .insert_events(&some.iter().map(|s| s.event.clone()).collect::<Vec<_>>())
        .await
        .unwrap();
    same_answers_everywhere(&db, &migrated, account).await;
    // The export goes on: migrated events are not counted again, the others are.
    db.store.write(&events).await.unwrap();
    same_answers_everywhere(&db, &reference, account).await;
    assert_eq!(db.counted().await, 200);
}
