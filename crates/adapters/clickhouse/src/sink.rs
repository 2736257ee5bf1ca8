//! The export side: the schema, its migration, and writes that count each event once.
//!
//! Two tables (the README shows them):
//! - `event_rows`: one row per event, ordered by `(account_id, occurred_us, id)`, so the
//!   partial hours at the edges of a window are a range of the primary key;
//! - `event_counts`: counts and sums per `(account, hour, event type, tool, decision)`, fed
//!   by every write, which answer the whole hours of a window; plus the *marks*: rows
//!   naming the runs of event ids whose counts the table holds.
//!
//! A write counts only the events no mark names, and writes their counts and their marks
//! in one insert into the unpartitioned `event_counts`: one block, hence one part, which
//! ClickHouse commits whole or not at all. A batch written again (the worker died between
//! the write and its checkpoint) finds its marks and adds nothing, so no read needs
//! `FINAL`. This relies on one writer at a time: the worker's export holds its job lock.

use std::collections::{BTreeMap, HashSet};

use async_trait::async_trait;
use d2_events::{AnalyticsSink, Decision, StoredEvent};
use d2_kernel::StoreError;
use serde::{Deserialize, Serialize};

use crate::client::{ClickHouse, number};

/// The columns of `event_rows` (and of the former `events`), as `CREATE TABLE` lists them.
pub(crate) const ROWS_COLUMNS: &str = "\
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

/// The columns a copy between the two event tables names (all but the materialized one).
const ROWS_COPIED: &str = "account_id, id, event_type, occurred_us, ingested_us, token_id, \
    app_name, service, host, source_ip, request_id, decision, tool, latency_ms, payload";

/// `ReplacingMergeTree`: the copy a write left behind when the worker died before writing
/// the counts is the same row under the same key, merged away in the background; queries
/// of the edges collapse such copies by id meanwhile.
pub(crate) const ROWS_ENGINE: &str = "ENGINE = ReplacingMergeTree() \
    PARTITION BY toYYYYMM(occurred_at) ORDER BY (account_id, occurred_us, id)";

/// The engine of the former `events` table, which `prepare` migrates from.
#[cfg(test)]
pub(crate) const LEGACY_ENGINE: &str =
    "ENGINE = ReplacingMergeTree() PARTITION BY toYYYYMM(occurred_at) ORDER BY (account_id, id)";

/// Count rows have `first_id = last_id = 0` and `marks = 0`; mark rows have
/// `account_id = ''` (no account's id), `hour = 0`, the run `[first_id, last_id]` and
/// `marks = 1` (`SummingMergeTree` drops rows whose sums are all zero).
pub(crate) const COUNTS_COLUMNS: &str = "\
    account_id String, \
    hour Int64, \
    event_type String, \
    tool String, \
    has_tool UInt8, \
    decision Int8, \
    first_id Int64, \
    last_id Int64, \
    events UInt64, \
    timed UInt64, \
    latency_ms Float64, \
    lag_us Int64, \
    marks UInt64";

/// Summed by key in the background; every query sums again, so merges change no answer.
/// Unpartitioned, so that one insert is one part.
pub(crate) const COUNTS_ENGINE: &str = "ENGINE = SummingMergeTree((events, timed, latency_ms, lag_us, marks)) \
    PARTITION BY tuple() \
    ORDER BY (account_id, hour, event_type, tool, has_tool, decision, first_id, last_id)";

/// One hour in microseconds.
pub(crate) const HOUR_US: i64 = 3_600_000_000;

/// One row of `event_rows` in `JSONEachRow` (`occurred_at` is computed by the server).
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
            decision: decision(event.facts.decision),
            tool: event.facts.tool.as_deref(),
            latency_ms: event.facts.latency_ms.filter(|ms| ms.is_finite()),
            payload: event.payload.to_string(),
        }
    }
}

/// 1 allowed, 0 denied, -1 not an authorization.
fn decision(decision: Option<Decision>) -> i8 {
    match decision {
        Some(Decision::Allowed) => 1,
        Some(Decision::Denied) => 0,
        None => -1,
    }
}

/// The key of one count row.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct CountKey<'a> {
    account_id: String,
    hour: i64,
    event_type: &'a str,
    tool: Option<&'a str>,
    decision: i8,
}

#[derive(Default)]
struct Sums {
    events: u64,
    timed: u64,
    latency_ms: f64,
    lag_us: i64,
}

/// One row of `event_counts` in `JSONEachRow`.
#[derive(Serialize)]
struct CountRow<'a> {
    account_id: &'a str,
    hour: i64,
    event_type: &'a str,
    tool: &'a str,
    has_tool: u8,
    decision: i8,
    first_id: i64,
    last_id: i64,
    events: u64,
    timed: u64,
    latency_ms: f64,
    lag_us: i64,
    marks: u64,
}

/// The runs of consecutive ids in `ids` (sorted, distinct), as `(first, last)`.
fn runs(ids: &[i64]) -> Vec<(i64, i64)> {
    let mut runs: Vec<(i64, i64)> = Vec::new();
    for &id in ids {
        match runs.last_mut() {
            Some((_, last)) if last.checked_add(1) == Some(id) => *last = id,
            _ => runs.push((id, id)),
        }
    }
    runs
}

#[derive(Deserialize)]
struct MarkRow {
    #[serde(deserialize_with = "number::i64")]
    first_id: i64,
    #[serde(deserialize_with = "number::i64")]
    last_id: i64,
}

#[derive(Deserialize)]
struct NameRow {
    name: String,
}

impl ClickHouse {
    /// The ids among `ids` (sorted, distinct, not empty) that a mark names: their counts
    /// are already in `event_counts`.
    async fn counted(&self, ids: &[i64]) -> Result<HashSet<i64>, StoreError> {
        let (Some(first), Some(last)) = (ids.first(), ids.last()) else {
            return Ok(HashSet::new());
        };
        let sql = format!(
            "SELECT first_id, last_id FROM {table} \
             WHERE account_id = '' AND hour = 0 AND last_id >= {first} AND first_id <= {last} \
             FORMAT JSON",
            table = self.counts_table(),
        );
        let marks = self.query::<MarkRow>("write", sql).await?.data;
        Ok(ids
            .iter()
            .copied()
            .filter(|id| {
                marks
                    .iter()
                    .any(|mark| (mark.first_id..=mark.last_id).contains(id))
            })
            .collect())
    }

    /// Writes `events` to `event_rows` (and nothing to `event_counts`).
    pub(crate) async fn write_rows(&self, events: &[&StoredEvent]) -> Result<(), StoreError> {
        let mut body =
            format!("INSERT INTO {} FORMAT JSONEachRow\n", self.rows_table()).into_bytes();
        // About 300 bytes per event before the payload.
        body.reserve(events.len().saturating_mul(400));
        for event in events {
            serde_json::to_writer(&mut body, &Row::of(event)).map_err(StoreError::internal)?;
            body.push(b'\n');
        }
        self.insert("write", body, events.len()).await
    }

    /// The tables of the database among `names`.
    async fn existing(&self, names: &[&str]) -> Result<HashSet<String>, StoreError> {
        let sql = format!(
            "SELECT name FROM system.tables WHERE database = '{database}' AND name IN ({names}) \
             FORMAT JSON",
            database = self.database.as_str(),
            names = names
                .iter()
                .map(|name| format!("'{name}'"))
                .collect::<Vec<_>>()
                .join(", "),
        );
        let rows = self.query::<NameRow>("prepare", sql).await?.data;
        Ok(rows.into_iter().map(|row| row.name).collect())
    }

    /// Fills `event_rows` and a new `event_counts` from the former `events` table, which
    /// is left in place for the operator to drop. The counts are built under another name
    /// and renamed once complete: a migration interrupted before the rename starts again
    /// (copied rows written twice are merged away like any retried row).
    async fn migrate_legacy(&self) -> Result<(), StoreError> {
        let legacy = format!("{}.`events`", self.database.quoted());
        let building = format!("{}.`event_counts_migrating`", self.database.quoted());
        self.execute("prepare", format!("DROP TABLE IF EXISTS {building}"))
            .await?;
        self.execute(
            "prepare",
            format!("CREATE TABLE {building} ({COUNTS_COLUMNS}) {COUNTS_ENGINE}"),
        )
        .await?;
        self.execute(
            "prepare",
            format!(
                "INSERT INTO {rows} ({ROWS_COPIED}) SELECT {ROWS_COPIED} FROM {legacy}",
                rows = self.rows_table(),
            ),
        )
        .await?;
        // `toInt64`: 18.16 types `Int64 % UInt32` as `Int32`, which overflows.
        let h = format!("toInt64({HOUR_US})");
        let hour = format!("intDiv(occurred_us - (occurred_us % {h} + {h}) % {h}, {h})");
        self.execute(
            "prepare",
            format!(
                "INSERT INTO {building} \
                 SELECT account_id, hour, event_type, tool_key, has_tool, decision, \
                    toInt64(0), toInt64(0), count(), countIf(isNotNull(latency_ms)), \
                    sum(ifNull(latency_ms, 0)), sum(lag), toUInt64(0) \
                 FROM (SELECT account_id, {hour} AS hour, event_type, \
                          ifNull(tool, '') AS tool_key, toUInt8(isNotNull(tool)) AS has_tool, \
                          decision, latency_ms, ingested_us - occurred_us AS lag \
                       FROM {legacy} FINAL) \
                 GROUP BY account_id, hour, event_type, tool_key, has_tool, decision"
            ),
        )
        .await?;
        // The runs of consecutive ids: in ascending order an id minus its rank is constant
        // along a run (one thread, so the rank follows the sorted stream).
        self.execute_with(
            "prepare",
            format!(
                "INSERT INTO {building} \
                 SELECT '' AS account_id, toInt64(0) AS hour, '' AS event_type, '' AS tool, \
                    toUInt8(0) AS has_tool, toInt8(0) AS decision, \
                    min(id) AS first_id, max(id) AS last_id, \
                    toUInt64(0) AS events, toUInt64(0) AS timed, toFloat64(0) AS latency_ms, \
                    toInt64(0) AS lag_us, toUInt64(1) AS marks \
                 FROM (SELECT id, id - toInt64(rowNumberInAllBlocks()) AS run \
                       FROM (SELECT DISTINCT id FROM {legacy} ORDER BY id)) \
                 GROUP BY run"
            ),
            &[("max_threads", "1")],
        )
        .await?;
        self.execute(
            "prepare",
            format!("RENAME TABLE {building} TO {}", self.counts_table()),
        )
        .await
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
                "CREATE TABLE IF NOT EXISTS {} ({ROWS_COLUMNS}) {ROWS_ENGINE}",
                self.rows_table()
            ),
        )
        .await?;
        let tables = self.existing(&["events", "event_counts"]).await?;
        if !tables.contains("event_counts") && tables.contains("events") {
            return self.migrate_legacy().await;
        }
        self.execute(
            "prepare",
            format!(
                "CREATE TABLE IF NOT EXISTS {} ({COUNTS_COLUMNS}) {COUNTS_ENGINE}",
                self.counts_table()
            ),
        )
        .await
    }

    async fn write(&self, events: &[StoredEvent]) -> Result<(), StoreError> {
        let mut ids: Vec<i64> = events.iter().map(|event| event.id).collect();
        ids.sort_unstable();
        ids.dedup();
        let counted = self.counted(&ids).await?;
        let mut seen = HashSet::with_capacity(events.len());
        let new: Vec<&StoredEvent> = events
            .iter()
            .filter(|event| !counted.contains(&event.id) && seen.insert(event.id))
            .collect();
        if new.is_empty() {
            return Ok(());
        }

        // 1. The rows, for the edges of windows. If the worker dies after this, the rows
        //    are written again with the counts next time, as copies merged away later.
        self.write_rows(&new).await?;

        // 2. The counts and the marks of the same events, in one insert.
        let mut sums: BTreeMap<CountKey<'_>, Sums> = BTreeMap::new();
        for stored in &new {
            let event = &stored.event;
            let occurred_us = event.occurred_at.timestamp_micros();
            let key = CountKey {
                account_id: event.account_id.to_string(),
                hour: occurred_us.div_euclid(HOUR_US),
                event_type: &event.event_type,
                tool: event.facts.tool.as_deref(),
                decision: decision(event.facts.decision),
            };
            let sum = sums.entry(key).or_default();
            sum.events += 1;
            if let Some(ms) = event.facts.latency_ms.filter(|ms| ms.is_finite()) {
                sum.timed += 1;
                sum.latency_ms += ms;
            }
            let lag = event
                .ingested_at
                .timestamp_micros()
                .wrapping_sub(occurred_us);
            sum.lag_us = sum.lag_us.wrapping_add(lag);
        }
        let mut new_ids: Vec<i64> = new.iter().map(|event| event.id).collect();
        new_ids.sort_unstable();
        let marks = runs(&new_ids);
        let mut body =
            format!("INSERT INTO {} FORMAT JSONEachRow\n", self.counts_table()).into_bytes();
        body.reserve((sums.len() + marks.len()).saturating_mul(200));
        for (key, sum) in &sums {
            let row = CountRow {
                account_id: &key.account_id,
                hour: key.hour,
                event_type: key.event_type,
                tool: key.tool.unwrap_or_default(),
                has_tool: u8::from(key.tool.is_some()),
                decision: key.decision,
                first_id: 0,
                last_id: 0,
                events: sum.events,
                timed: sum.timed,
                latency_ms: sum.latency_ms,
                lag_us: sum.lag_us,
                marks: 0,
            };
            serde_json::to_writer(&mut body, &row).map_err(StoreError::internal)?;
            body.push(b'\n');
        }
        for (first_id, last_id) in marks.iter().copied() {
            let row = CountRow {
                account_id: "",
                hour: 0,
                event_type: "",
                tool: "",
                has_tool: 0,
                decision: 0,
                first_id,
                last_id,
                events: 0,
                timed: 0,
                latency_ms: 0.0,
                lag_us: 0,
                marks: 1,
            };
            serde_json::to_writer(&mut body, &row).map_err(StoreError::internal)?;
            body.push(b'\n');
        }
        self.insert("write", body, sums.len() + marks.len()).await
    }
}

#[cfg(test)]
mod tests {
    use super::runs;

    #[test]
    fn runs_are_the_consecutive_stretches() {
        assert_eq!(runs(&[]), vec![]);
        assert_eq!(runs(&[4]), vec![(4, 4)]);
        assert_eq!(
            runs(&[1, 2, 3, 7, 9, 10, i64::MAX]),
            vec![(1, 3), (7, 7), (9, 10), (i64::MAX, i64::MAX)]
        );
    }
}
