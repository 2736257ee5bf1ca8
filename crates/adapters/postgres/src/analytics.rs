//! Metrics computed by PostgreSQL over one account's window of events.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use d2_events::{AnalyticsStore, Bucket, Dimension, Summary, TimePoint, Top, TopItem};
use d2_kernel::{AccountId, StoreError};
use diesel::sql_types::{BigInt, Double, Integer, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;

use crate::error::from_diesel;
use crate::pool::PgStore;

#[derive(diesel::QueryableByName)]
struct SummaryRow {
    #[diesel(sql_type = BigInt)]
    allowed: i64,
    #[diesel(sql_type = BigInt)]
    denied: i64,
    #[diesel(sql_type = BigInt)]
    unique_tools: i64,
    #[diesel(sql_type = Nullable<Double>)]
    avg_decision_ms: Option<f64>,
    #[diesel(sql_type = Nullable<Double>)]
    avg_ingest_lag_ms: Option<f64>,
}

#[derive(diesel::QueryableByName)]
struct PointRow {
    #[diesel(sql_type = Timestamptz)]
    ts: DateTime<Utc>,
    #[diesel(sql_type = BigInt)]
    allowed: i64,
    #[diesel(sql_type = BigInt)]
    denied: i64,
}

#[derive(diesel::QueryableByName)]
struct TopRow {
    #[diesel(sql_type = Text)]
    key: String,
    #[diesel(sql_type = BigInt)]
    count: i64,
    #[diesel(sql_type = BigInt)]
    total: i64,
}

fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

// Every analytics query reads one account's window through `events_identity`:
// `$1` the account, `[$2, $3)` the window of `occurred_at`.
const WINDOW: &str = "account_id = $1 AND occurred_at >= $2 AND occurred_at < $3";

#[async_trait]
impl AnalyticsStore for PgStore {
    async fn summary(
        &self,
        account_id: AccountId,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Summary, StoreError> {
        let mut conn = self.conn().await?;
        let row: SummaryRow = diesel::sql_query(format!(
            "SELECT count(*) FILTER (WHERE decision = 1) AS allowed, \
                    count(*) FILTER (WHERE decision = 0) AS denied, \
                    count(DISTINCT tool) FILTER (WHERE decision IS NOT NULL) AS unique_tools, \
                    avg(latency_ms) FILTER (WHERE decision IS NOT NULL) AS avg_decision_ms, \
                    avg(extract(epoch FROM ingested_at - occurred_at) * 1000)::float8 \
                        AS avg_ingest_lag_ms \
             FROM events WHERE {WINDOW}"
        ))
        .bind::<SqlUuid, _>(account_id.as_uuid())
        .bind::<Timestamptz, _>(start)
        .bind::<Timestamptz, _>(end)
        .get_result(&mut conn)
        .await
        .map_err(from_diesel)?;
        Ok(Summary {
            allowed: count(row.allowed),
            denied: count(row.denied),
            unique_tools: count(row.unique_tools),
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
        let mut conn = self.conn().await?;
        let rows: Vec<PointRow> = diesel::sql_query(format!(
            "SELECT date_trunc($4, occurred_at, 'UTC') AS ts, \
                    count(*) FILTER (WHERE decision = 1) AS allowed, \
                    count(*) FILTER (WHERE decision = 0) AS denied \
             FROM events WHERE {WINDOW} AND decision IS NOT NULL \
             GROUP BY 1 ORDER BY 1"
        ))
        .bind::<SqlUuid, _>(account_id.as_uuid())
        .bind::<Timestamptz, _>(start)
        .bind::<Timestamptz, _>(end)
        .bind::<Text, _>(bucket.as_str())
        .load(&mut conn)
        .await
        .map_err(from_diesel)?;
        Ok(rows
            .into_iter()
            .map(|row| TimePoint {
                ts: row.ts,
                allowed: count(row.allowed),
                denied: count(row.denied),
            })
            .collect())
    }

    async fn top(
        &self,
        account_id: AccountId,
        dimension: Dimension,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        n: u32,
    ) -> Result<Top, StoreError> {
        let keyed = match dimension {
            Dimension::Tools | Dimension::Resources => {
                "tool AS key FROM events WHERE {WINDOW} AND decision IS NOT NULL AND tool IS NOT NULL"
            }
            Dimension::EventType => "event_type AS key FROM events WHERE {WINDOW}",
        }
        .replace("{WINDOW}", WINDOW);
        // The window total is computed before LIMIT, so it covers every key. Keys tie-break
        // in byte order (COLLATE "C"), the same on every store.
        let mut conn = self.conn().await?;
        let rows: Vec<TopRow> = diesel::sql_query(format!(
            "SELECT key, count(*) AS count, (sum(count(*)) OVER ())::bigint AS total \
             FROM (SELECT {keyed}) AS keyed \
             GROUP BY key ORDER BY count DESC, key COLLATE \"C\" LIMIT $4"
        ))
        .bind::<SqlUuid, _>(account_id.as_uuid())
        .bind::<Timestamptz, _>(start)
        .bind::<Timestamptz, _>(end)
        .bind::<Integer, _>(i32::try_from(n).unwrap_or(i32::MAX))
        .load(&mut conn)
        .await
        .map_err(from_diesel)?;
        let total = rows.iter().map(|row| count(row.total)).next().unwrap_or(0);
        Ok(Top {
            total,
            items: rows
                .into_iter()
                .map(|row| TopItem {
                    key: row.key,
                    count: count(row.count),
                })
                .collect(),
        })
    }
}
