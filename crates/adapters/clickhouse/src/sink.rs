//! The export side: the schema, and idempotent writes.

use async_trait::async_trait;
use d2_events::{AnalyticsSink, Decision, StoredEvent};
use d2_kernel::StoreError;
use serde::Serialize;

use crate::client::ClickHouse;

/// The columns of `events`, as `CREATE TABLE` lists them (also the README's schema).
///
/// `ReplacingMergeTree` keyed by `(account_id, id)` keeps one row per exported event: the
/// PostgreSQL id is unique, and a retried export writes identical rows, which land in the
/// same partition (the partition follows `occurred_us`). Queries read with `FINAL`, so
/// they are right before the background merge has removed the copies.
pub(crate) const EVENTS_COLUMNS: &str = "\
    account_id String, \
    id Int64, \
    event_type String, \
    occurred_us Int64, \
    ingested_us Int64, \
    occurred_at DateTime('UTC') MATERIALIZED \
        toDateTime(greatest(toInt64(0), least(intDiv(occurred_us, toInt64(1000000)), toInt64(4294967295))), 'UTC'), \
    token_id Nullable(String), \
    app_name Nullable(String), \
    service Nullable(String), \
    host Nullable(String), \
    source_ip Nullable(String), \
    request_id Nullable(String), \
    decision Int8, \
    tool Nullable(String), \
    latency_ms Nullable(Float64), \
    payload String";

pub(crate) const EVENTS_ENGINE: &str =
    "ENGINE = ReplacingMergeTree() PARTITION BY toYYYYMM(occurred_at) ORDER BY (account_id, id)";

/// One row of `events` in `JSONEachRow` (`occurred_at` is computed by the server).
#[derive(Serialize)]
struct Row<'a> {
    account_id: String,
    id: i64,
    event_type: &'a str,
    occurred_us: i64,
    ingested_us: i64,
    token_id: Option<String>,
    app_name: Option<&'a str>,
    service: Option<&'a str>,
    host: Option<&'a str>,
    source_ip: Option<&'a str>,
    request_id: Option<&'a str>,
    /// 1 allowed, 0 denied, -1 not an authorization (no decision).
    decision: i8,
    tool: Option<&'a str>,
    latency_ms: Option<f64>,
    /// The payload as JSON text.
    payload: String,
}

impl<'a> Row<'a> {
    fn of(stored: &'a StoredEvent) -> Self {
        let event = &stored.event;
        Self {
            account_id: event.account_id.to_string(),
            id: stored.id,
            event_type: &event.event_type,
            occurred_us: event.occurred_at.timestamp_micros(),
            ingested_us: event.ingested_at.timestamp_micros(),
            token_id: event.token_id.map(|t| t.to_string()),
            app_name: event.app_name.as_ref().map(|a| a.as_str()),
            service: event.service.as_deref(),
            host: event.host.as_deref(),
            source_ip: event.source_ip.as_deref(),
            request_id: event.request_id.as_deref(),
            decision: match event.facts.decision {
                Some(Decision::Allowed) => 1,
                Some(Decision::Denied) => 0,
                None => -1,
            },
            tool: event.facts.tool.as_deref(),
            latency_ms: event.facts.latency_ms.filter(|ms| ms.is_finite()),
            payload: event.payload.to_string(),
        }
    }
}

#[async_trait]
impl AnalyticsSink for ClickHouse {
    async fn prepare(&self) -> Result<(), StoreError> {
        self.execute(
            "prepare",
            format!("CREATE DATABASE IF NOT EXISTS {}", self.database.quoted()),
        )
        .await?;
        self.execute(
            "prepare",
            format!(
                "CREATE TABLE IF NOT EXISTS {} ({EVENTS_COLUMNS}) {EVENTS_ENGINE}",
                self.events_table()
            ),
        )
        .await
    }

    async fn write(&self, events: &[StoredEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut body =
            format!("INSERT INTO {} FORMAT JSONEachRow\n", self.events_table()).into_bytes();
        // About 300 bytes per event before the payload.
        body.reserve(events.len().saturating_mul(400));
        for event in events {
            serde_json::to_writer(&mut body, &Row::of(event)).map_err(StoreError::internal)?;
            body.push(b'\n');
        }
        self.execute("write", body).await
    }
}
