//! Metrics computed by the database over one account's window of events. The SQL is each
//! store's own (`crate::analytics_sql`); the parameters are the same: `1` the account,
//! `[2, 3)` the window of `occurred_at`, and `4` the bucket width in seconds or the number
//! of keys.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use d2_events::{AnalyticsStore, Bucket, Dimension, Summary, TimePoint, Top, TopItem};
use d2_kernel::{AccountId, StoreError};
use diesel::sql_types::{BigInt, Double, Integer, Nullable, Text};
use diesel_async::RunQueryDsl;

use crate::analytics_sql::{SUMMARY, TIMESERIES, TOP_EVENT_TYPES, TOP_TOOLS};
use crate::error::from_diesel;
use crate::id::Id;
use crate::types::{Timestamptz, Uuid as SqlUuid};

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

#[async_trait]
impl AnalyticsStore for crate::Store {
    async fn summary(
        &self,
        account_id: AccountId,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Summary, StoreError> {
        let mut conn = self.conn().await?;
        let row: SummaryRow = diesel::sql_query(SUMMARY)
            .bind::<SqlUuid, _>(Id::from(account_id))
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
        let rows: Vec<PointRow> = diesel::sql_query(TIMESERIES)
            .bind::<SqlUuid, _>(Id::from(account_id))
            .bind::<Timestamptz, _>(start)
            .bind::<Timestamptz, _>(end)
            .bind::<BigInt, _>(bucket.seconds())
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
        let sql = match dimension {
            Dimension::Tools | Dimension::Resources => TOP_TOOLS,
            Dimension::EventType => TOP_EVENT_TYPES,
        };
        let mut conn = self.conn().await?;
        let rows: Vec<TopRow> = diesel::sql_query(sql)
            .bind::<SqlUuid, _>(Id::from(account_id))
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
