//! The query side: every answer is aggregated by ClickHouse; Rust only decodes the rows.
//!
//! Only values the adapter renders itself reach the SQL: the account id (a typed UUID),
//! integers computed from the window, and the table name (validated at construction).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use d2_events::{AnalyticsStore, Bucket, Dimension, Summary, TimePoint, Top, TopItem};
use d2_kernel::{AccountId, StoreError};
use serde::Deserialize;

use crate::client::{ClickHouse, number};
use crate::sink::HOUR_US;

/// The facts of one account's events with `occurred_at` in `[start, end)`, as a subquery
/// of partial sums: the whole hours of the window from `event_counts`, the rest (the
/// partial hours at its edges, or all of it when `whole_hours` is false) from `event_rows`.
///
/// Its columns: `at_us` (the event's time, or its hour's start for counts), `kind` (the
/// event type), `tool_key` and `has_tool` (`''` and 0 for no tool), `decision`, and the
/// sums `cnt` (events), `timed` (events with a latency), `latency_sum` (ms), `lag_sum`
/// (µs). Rows are read by the primary key of each table; a row written twice (the worker
/// died before writing its counts) is counted once, by id (`LIMIT 1 BY id`: the copies are
/// identical, and keeping the first costs half of grouping by id). No `FINAL` anywhere.
fn facts(
    clickhouse: &ClickHouse,
    account_id: AccountId,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    whole_hours: bool,
) -> String {
    let (counts, rows) = (clickhouse.counts_table(), clickhouse.rows_table());
    let account = account_id.as_uuid().hyphenated();
    let (start_us, end_us) = (start.timestamp_micros(), end.timestamp_micros());
    // The whole hours `[first, last)` inside the window.
    let first = start_us.div_euclid(HOUR_US) + i64::from(start_us.rem_euclid(HOUR_US) != 0);
    let last = end_us.div_euclid(HOUR_US);
    let mut edges = Vec::new();
    let mut parts = Vec::new();
    if whole_hours && first < last {
        let (from_us, to_us) = (first * HOUR_US, last * HOUR_US);
        if start_us < from_us {
            edges.push((start_us, from_us));
        }
        if to_us < end_us {
            edges.push((to_us, end_us));
        }
        parts.push(format!(
            "SELECT hour * toInt64({HOUR_US}) AS at_us, event_type AS kind, tool AS tool_key, \
                has_tool, decision, events AS cnt, timed, latency_ms AS latency_sum, \
                lag_us AS lag_sum \
             FROM {counts} \
             WHERE account_id = '{account}' AND hour >= {first} AND hour < {last}"
        ));
    } else {
        edges.push((start_us, end_us));
    }
    if !edges.is_empty() || parts.is_empty() {
        let within = edges
            .iter()
            .map(|(from, to)| format!("(occurred_us >= {from} AND occurred_us < {to})"))
            .collect::<Vec<_>>()
            .join(" OR ");
        let within = if within.is_empty() {
            "0".to_owned()
        } else {
            within
        };
        parts.push(format!(
            "SELECT toInt64(o_us) AS at_us, toString(etype) AS kind, \
                toString(ifNull(t, '')) AS tool_key, toUInt8(isNotNull(t)) AS has_tool, \
                toInt8(d) AS decision, toUInt64(1) AS cnt, toUInt64(isNotNull(lat)) AS timed, \
                toFloat64(ifNull(lat, toFloat64(0))) AS latency_sum, \
                toInt64(i_us - o_us) AS lag_sum \
             FROM (SELECT id, occurred_us AS o_us, ingested_us AS i_us, \
                      event_type AS etype, tool AS t, decision AS d, latency_ms AS lat \
                   FROM {rows} \
                   WHERE account_id = '{account}' AND ({within}) \
                   LIMIT 1 BY id)"
        ));
    }
    format!("({})", parts.join(" UNION ALL "))
}

#[derive(Debug, Deserialize)]
struct SummaryRow {
    #[serde(deserialize_with = "number::u64")]
    allowed: u64,
    #[serde(deserialize_with = "number::u64")]
    denied: u64,
    #[serde(deserialize_with = "number::u64_or_null")]
    unique_tools: u64,
    #[serde(deserialize_with = "number::f64_or_null")]
    avg_decision_ms: Option<f64>,
    #[serde(deserialize_with = "number::f64_or_null")]
    avg_ingest_lag_ms: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct PointRow {
    #[serde(deserialize_with = "number::i64")]
    bucket_us: i64,
    #[serde(deserialize_with = "number::u64")]
    allowed: u64,
    #[serde(deserialize_with = "number::u64")]
    denied: u64,
}

#[derive(Debug, Deserialize)]
struct TopRow {
    /// `null` only in the totals row.
    key: Option<String>,
    #[serde(deserialize_with = "number::u64")]
    n: u64,
}

fn single<T>(mut rows: Vec<T>, what: &str) -> Result<T, StoreError> {
    match (rows.pop(), rows.is_empty()) {
        (Some(row), true) => Ok(row),
        _ => Err(StoreError::corrupt(format!(
            "ClickHouse did not answer one row for {what}"
        ))),
    }
}

#[async_trait]
impl AnalyticsStore for ClickHouse {
    async fn summary(
        &self,
        account_id: AccountId,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Summary, StoreError> {
        // Authorizations are the events with a decision (1 allowed, 0 denied; -1 none).
        let sql = format!(
            "SELECT \
                sumIf(cnt, decision = 1) AS allowed, \
                sumIf(cnt, decision = 0) AS denied, \
                uniqExactIf(tool_key, decision >= 0 AND has_tool = 1) AS unique_tools, \
                if(sumIf(timed, decision >= 0) > 0, \
                   sumIf(latency_sum, decision >= 0) / sumIf(timed, decision >= 0), NULL) \
                    AS avg_decision_ms, \
                if(sum(cnt) > 0, sum(toFloat64(lag_sum)) / sum(cnt) / 1000, NULL) \
                    AS avg_ingest_lag_ms \
             FROM {facts} \
             FORMAT JSON",
            facts = facts(self, account_id, start, end, true),
        );
        let row: SummaryRow = single(self.query("summary", sql).await?.data, "summary")?;
        Ok(Summary {
            allowed: row.allowed,
            denied: row.denied,
            unique_tools: row.unique_tools,
            avg_decision_ms: row.avg_decision_ms,
            avg_ingest_lag_ms: row.avg_ingest_lag_ms,
        })
    }

    async fn timeseries(
        &self,
        account_id: AccountId,
        bucket: Bucket,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<TimePoint>, StoreError> {
        // UTC buckets are whole multiples of the width since the epoch; the start of an
        // event's bucket is its time minus the (non-negative) remainder.
        let width_us = bucket.seconds() * 1_000_000;
        let width = format!("toInt64({width_us})");
        let sql = format!(
            "SELECT \
                at_us - (at_us % {width} + {width}) % {width} AS bucket_us, \
                sumIf(cnt, decision = 1) AS allowed, \
                sumIf(cnt, decision = 0) AS denied \
             FROM {facts} \
             WHERE decision >= 0 \
             GROUP BY bucket_us \
             ORDER BY bucket_us \
             FORMAT JSON",
            // Hours fall whole into buckets of whole hours.
            facts = facts(self, account_id, start, end, width_us % HOUR_US == 0),
        );
        let rows: Vec<PointRow> = self.query("timeseries", sql).await?.data;
        rows.into_iter()
            .map(|row| {
                let ts = DateTime::from_timestamp_micros(row.bucket_us)
                    .ok_or_else(|| StoreError::corrupt("a bucket outside chrono's range"))?;
                Ok(TimePoint {
                    ts,
                    allowed: row.allowed,
                    denied: row.denied,
                })
            })
            .collect()
    }

    async fn top(
        &self,
        account_id: AccountId,
        dimension: Dimension,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        n: u32,
    ) -> Result<Top, StoreError> {
        let (key, only) = match dimension {
            Dimension::Tools | Dimension::Resources => {
                ("tool_key", "WHERE decision >= 0 AND has_tool = 1")
            }
            Dimension::EventType => ("kind", ""),
        };
        // `WITH TOTALS` counts every group, not only those within the LIMIT. `LIMIT 0`
        // would skip the totals as well, so ask for at least one row and drop it below.
        let sql = format!(
            "SELECT {key} AS key, sum(cnt) AS n \
             FROM {facts} \
             {only} \
             GROUP BY key WITH TOTALS \
             ORDER BY n DESC, key ASC \
             LIMIT {limit} \
             FORMAT JSON",
            facts = facts(self, account_id, start, end, true),
            limit = n.max(1),
        );
        let answer = self.query::<TopRow>("top", sql).await?;
        let total = answer.totals.map_or(0, |totals| totals.n);
        let items = answer
            .data
            .into_iter()
            .take(usize::try_from(n).unwrap_or(usize::MAX))
            .map(|row| {
                let key = row
                    .key
                    .ok_or_else(|| StoreError::corrupt("a top key without a value"))?;
                Ok(TopItem { key, count: row.n })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Top { total, items })
    }
}
