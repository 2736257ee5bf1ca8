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

/// The rows of one account with `occurred_at` in `[start, end)`.
///
/// The exact bounds are on `occurred_us`; the bounds on `occurred_at` (whole seconds,
/// clamped to `DateTime`'s range exactly as the column is) are implied by them and only
/// let ClickHouse skip the partitions outside the window.
fn window(account_id: AccountId, start: DateTime<Utc>, end: DateTime<Utc>) -> String {
    let (start_us, end_us) = (start.timestamp_micros(), end.timestamp_micros());
    let seconds = |us: i64| us.div_euclid(1_000_000).clamp(0, i64::from(u32::MAX));
    format!(
        "account_id = '{account}' \
         AND occurred_us >= {start_us} AND occurred_us < {end_us} \
         AND occurred_at >= toDateTime({start_s}, 'UTC') \
         AND occurred_at <= toDateTime({end_s}, 'UTC')",
        account = account_id.as_uuid().hyphenated(),
        start_s = seconds(start_us),
        end_s = seconds(end_us),
    )
}

/// Authorizations: events with a decision (1 allowed, 0 denied; -1 is none).
const DECIDED: &str = "decision >= 0";

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
        let timed = format!("{DECIDED} AND isNotNull(latency_ms)");
        let sql = format!(
            "SELECT \
                countIf(decision = 1) AS allowed, \
                countIf(decision = 0) AS denied, \
                uniqExactIf(tool, {DECIDED} AND isNotNull(tool)) AS unique_tools, \
                if(countIf({timed}) > 0, sumIf(latency_ms, {timed}) / countIf({timed}), NULL) \
                    AS avg_decision_ms, \
                if(count() > 0, sum(toFloat64(ingested_us - occurred_us)) / count() / 1000, NULL) \
                    AS avg_ingest_lag_ms \
             FROM {table} FINAL \
             WHERE {window} \
             FORMAT JSON",
            table = self.events_table(),
            window = window(account_id, start, end),
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
                occurred_us - (occurred_us % {width} + {width}) % {width} AS bucket_us, \
                countIf(decision = 1) AS allowed, \
                countIf(decision = 0) AS denied \
             FROM {table} FINAL \
             WHERE {window} AND {DECIDED} \
             GROUP BY bucket_us \
             ORDER BY bucket_us \
             FORMAT JSON",
            table = self.events_table(),
            window = window(account_id, start, end),
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
                ("tool", format!("AND {DECIDED} AND isNotNull(tool)"))
            }
            Dimension::EventType => ("event_type", String::new()),
        };
        // `WITH TOTALS` counts every group, not only those within the LIMIT. `LIMIT 0`
        // would skip the totals as well, so ask for at least one row and drop it below.
        let sql = format!(
            "SELECT {key} AS key, count() AS n \
             FROM {table} FINAL \
             WHERE {window} {only} \
             GROUP BY key WITH TOTALS \
             ORDER BY n DESC, key ASC \
             LIMIT {limit} \
             FORMAT JSON",
            table = self.events_table(),
            window = window(account_id, start, end),
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
