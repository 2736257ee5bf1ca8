use async_trait::async_trait;
use chrono::{DateTime, Utc};
use d2_events::{
    AnalyticsStore, AppResolver, Bucket, Decision, Dimension, EventFacts, EventFilter, EventStore,
    ExportCheckpoints, ExportCursor, NewEvent, StoredEvent, Summary, TimePoint, Top, TopItem,
};
use d2_kernel::{AccountId, AppName, Cursor, Page, PageRequest, StoreError, TokenId};
use diesel::prelude::*;
use diesel::sql_types::{
    Array, BigInt, Bytea, Double, Integer, Jsonb, Nullable, SmallInt, Text, Timestamptz,
    Uuid as SqlUuid,
};
use diesel::upsert::excluded;
use diesel_async::RunQueryDsl;

use crate::error::from_diesel;
use crate::pool::PgStore;
use crate::position::{Side, beyond};
use crate::schema::{events, job_checkpoints, policies};

/// A batch as one array per column, for one `INSERT ... SELECT FROM unnest(...)`: fifteen
/// parameters whatever the batch size, where a multi-row `VALUES` list would bind (and
/// PostgreSQL plan) fifteen per event.
struct EventColumns<'a> {
    account_id: Vec<uuid::Uuid>,
    event_key: Vec<&'a [u8]>,
    token_id: Vec<Option<uuid::Uuid>>,
    event_type: Vec<&'a str>,
    occurred_at: Vec<DateTime<Utc>>,
    ingested_at: Vec<DateTime<Utc>>,
    app_name: Vec<Option<&'a str>>,
    service: Vec<Option<&'a str>>,
    host: Vec<Option<&'a str>>,
    source_ip: Vec<Option<&'a str>>,
    request_id: Vec<Option<&'a str>>,
    decision: Vec<Option<i16>>,
    tool: Vec<Option<&'a str>>,
    latency_ms: Vec<Option<f64>>,
    payload: Vec<&'a serde_json::Value>,
}

impl<'a> EventColumns<'a> {
    fn of(events: &'a [NewEvent]) -> Self {
        Self {
            account_id: events.iter().map(|e| *e.account_id.as_uuid()).collect(),
            event_key: events.iter().map(|e| e.key.as_slice()).collect(),
            token_id: events
                .iter()
                .map(|e| e.token_id.map(|id| *id.as_uuid()))
                .collect(),
            event_type: events.iter().map(|e| e.event_type.as_str()).collect(),
            occurred_at: events.iter().map(|e| e.occurred_at).collect(),
            ingested_at: events.iter().map(|e| e.ingested_at).collect(),
            app_name: events
                .iter()
                .map(|e| e.app_name.as_ref().map(AppName::as_str))
                .collect(),
            service: events.iter().map(|e| e.service.as_deref()).collect(),
            host: events.iter().map(|e| e.host.as_deref()).collect(),
            source_ip: events.iter().map(|e| e.source_ip.as_deref()).collect(),
            request_id: events.iter().map(|e| e.request_id.as_deref()).collect(),
            decision: events
                .iter()
                .map(|e| e.facts.decision.map(Decision::as_i16))
                .collect(),
            tool: events.iter().map(|e| e.facts.tool.as_deref()).collect(),
            latency_ms: events.iter().map(|e| e.facts.latency_ms).collect(),
            payload: events.iter().map(|e| &e.payload).collect(),
        }
    }
}

#[derive(QueryableByName)]
struct InsertedKey {
    #[diesel(sql_type = Bytea)]
    event_key: Vec<u8>,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = events, check_for_backend(diesel::pg::Pg))]
struct EventRow {
    id: i64,
    account_id: uuid::Uuid,
    event_key: Vec<u8>,
    token_id: Option<uuid::Uuid>,
    event_type: String,
    occurred_at: DateTime<Utc>,
    ingested_at: DateTime<Utc>,
    app_name: Option<String>,
    service: Option<String>,
    host: Option<String>,
    source_ip: Option<String>,
    request_id: Option<String>,
    decision: Option<i16>,
    tool: Option<String>,
    latency_ms: Option<f64>,
    payload: serde_json::Value,
}

impl EventRow {
    fn into_domain(self) -> Result<StoredEvent, StoreError> {
        let key = <[u8; 32]>::try_from(self.event_key.as_slice())
            .map_err(|_| StoreError::corrupt("event key"))?;
        let decision = match self.decision {
            Some(value) => {
                Some(Decision::from_i16(value).ok_or_else(|| StoreError::corrupt("decision"))?)
            }
            None => None,
        };
        Ok(StoredEvent {
            id: self.id,
            event: NewEvent {
                account_id: AccountId::from_uuid(self.account_id),
                key,
                token_id: self.token_id.map(TokenId::from_uuid),
                event_type: self.event_type,
                occurred_at: self.occurred_at,
                ingested_at: self.ingested_at,
                app_name: self.app_name.as_deref().map(AppName::normalise),
                service: self.service,
                host: self.host,
                source_ip: self.source_ip,
                request_id: self.request_id,
                facts: EventFacts {
                    decision,
                    tool: self.tool,
                    latency_ms: self.latency_ms,
                },
                payload: self.payload,
            },
        })
    }
}

fn into_domain(rows: Vec<EventRow>) -> Result<Vec<StoredEvent>, StoreError> {
    rows.into_iter().map(EventRow::into_domain).collect()
}

#[async_trait]
impl EventStore for PgStore {
    async fn insert_events(&self, batch: &[NewEvent]) -> Result<Vec<[u8; 32]>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let columns = EventColumns::of(batch);
        let mut conn = self.conn().await?;
        // One statement: atomic without an explicit transaction.
        let keys: Vec<InsertedKey> = diesel::sql_query(
            "INSERT INTO events (account_id, event_key, token_id, event_type, occurred_at, \
                 ingested_at, app_name, service, host, source_ip, request_id, decision, tool, \
                 latency_ms, payload) \
             SELECT * FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, \
                 $14, $15) \
             ON CONFLICT (account_id, occurred_at, event_key) DO NOTHING RETURNING event_key",
        )
        .bind::<Array<SqlUuid>, _>(&columns.account_id)
        .bind::<Array<Bytea>, _>(&columns.event_key)
        .bind::<Array<Nullable<SqlUuid>>, _>(&columns.token_id)
        .bind::<Array<Text>, _>(&columns.event_type)
        .bind::<Array<Timestamptz>, _>(&columns.occurred_at)
        .bind::<Array<Timestamptz>, _>(&columns.ingested_at)
        .bind::<Array<Nullable<Text>>, _>(&columns.app_name)
        .bind::<Array<Nullable<Text>>, _>(&columns.service)
        .bind::<Array<Nullable<Text>>, _>(&columns.host)
        .bind::<Array<Nullable<Text>>, _>(&columns.source_ip)
        .bind::<Array<Nullable<Text>>, _>(&columns.request_id)
        .bind::<Array<Nullable<SmallInt>>, _>(&columns.decision)
        .bind::<Array<Nullable<Text>>, _>(&columns.tool)
        .bind::<Array<Nullable<Double>>, _>(&columns.latency_ms)
        .bind::<Array<Jsonb>, _>(&columns.payload)
        .load(&mut conn)
        .await
        .map_err(from_diesel)?;
        let keys = keys.into_iter().map(|row| row.event_key);
        keys.into_iter()
            .map(|key| {
                <[u8; 32]>::try_from(key.as_slice()).map_err(|_| StoreError::corrupt("event key"))
            })
            .collect()
    }

    async fn list_events(
        &self,
        account_id: AccountId,
        filter: &EventFilter,
        page: &PageRequest,
    ) -> Result<Page<StoredEvent>, StoreError> {
        let mut query = events::table
            .filter(events::account_id.eq(account_id.as_uuid()))
            .select(EventRow::as_select())
            .order((events::ingested_at.desc(), events::id.desc()))
            .limit(i64::from(page.limit()) + 1)
            .into_boxed();
        if let Some(event_type) = &filter.event_type {
            query = query.filter(events::event_type.eq(event_type.clone()));
        }
        if let Some(app) = &filter.app_name {
            query = query.filter(events::app_name.eq(app.as_str().to_owned()));
        }
        if let Some(service) = &filter.service {
            query = query.filter(events::service.eq(service.clone()));
        }
        if let Some(since) = filter.since {
            query = query.filter(events::occurred_at.ge(since));
        }
        if let Some(until) = filter.until {
            query = query.filter(events::occurred_at.lt(until));
        }
        if let Some(cursor) = page.after() {
            let id: i64 = cursor
                .id_as()
                .map_err(|_| StoreError::corrupt("event cursor"))?;
            query = query.filter(beyond::<_, BigInt, _>(
                "ingested_at, id",
                Side::Before,
                cursor.at,
                id,
            ));
        }
        let mut conn = self.conn().await?;
        let rows = query.load(&mut conn).await.map_err(from_diesel)?;
        Ok(page.page_from(into_domain(rows)?, |s| {
            Cursor::new(s.event.ingested_at, s.id.to_string())
        }))
    }

    async fn events_after(
        &self,
        after: Option<ExportCursor>,
        settled_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut query = events::table
            .filter(events::ingested_at.lt(settled_before))
            .select(EventRow::as_select())
            .order((events::ingested_at.asc(), events::id.asc()))
            .limit(i64::from(limit))
            .into_boxed();
        if let Some(cursor) = after {
            query = query.filter(beyond::<_, BigInt, _>(
                "ingested_at, id",
                Side::After,
                cursor.ingested_at,
                cursor.id,
            ));
        }
        let mut conn = self.conn().await?;
        into_domain(query.load(&mut conn).await.map_err(from_diesel)?)
    }

    async fn prune_events(
        &self,
        up_to: ExportCursor,
        older_than: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        // In slices, so each statement stays short whatever the backlog.
        let mut conn = self.conn().await?;
        let mut total = 0;
        loop {
            let deleted = diesel::sql_query(
                "DELETE FROM events WHERE id IN (SELECT id FROM events \
                 WHERE ingested_at < $1 AND (ingested_at, id) <= ($2, $3) LIMIT $4)",
            )
            .bind::<Timestamptz, _>(older_than)
            .bind::<Timestamptz, _>(up_to.ingested_at)
            .bind::<BigInt, _>(up_to.id)
            .bind::<BigInt, _>(PRUNE_SLICE)
            .execute(&mut conn)
            .await
            .map_err(from_diesel)?;
            total += u64::try_from(deleted).unwrap_or(u64::MAX);
            if i64::try_from(deleted).unwrap_or(i64::MAX) < PRUNE_SLICE {
                return Ok(total);
            }
        }
    }
}

/// Rows deleted per statement by retention.
const PRUNE_SLICE: i64 = 10_000;

#[derive(QueryableByName)]
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

#[derive(QueryableByName)]
struct PointRow {
    #[diesel(sql_type = Timestamptz)]
    ts: DateTime<Utc>,
    #[diesel(sql_type = BigInt)]
    allowed: i64,
    #[diesel(sql_type = BigInt)]
    denied: i64,
}

#[derive(QueryableByName)]
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

#[async_trait]
impl AppResolver for PgStore {
    async fn app_for_etag(
        &self,
        account_id: AccountId,
        etag: &str,
    ) -> Result<Option<AppName>, StoreError> {
        let mut conn = self.conn().await?;
        let app: Option<String> = policies::table
            .filter(policies::account_id.eq(account_id.as_uuid()))
            .filter(policies::etag.eq(etag))
            .select(policies::app_name)
            .first(&mut conn)
            .await
            .optional()
            .map_err(from_diesel)?;
        Ok(app.as_deref().map(AppName::normalise))
    }
}

#[async_trait]
impl ExportCheckpoints for PgStore {
    async fn load(&self, job: &str) -> Result<Option<ExportCursor>, StoreError> {
        let mut conn = self.conn().await?;
        let row: Option<(DateTime<Utc>, i64)> = job_checkpoints::table
            .filter(job_checkpoints::job.eq(job))
            .select((job_checkpoints::ingested_at, job_checkpoints::event_id))
            .first(&mut conn)
            .await
            .optional()
            .map_err(from_diesel)?;
        Ok(row.map(|(ingested_at, id)| ExportCursor { ingested_at, id }))
    }

    async fn save(&self, job: &str, cursor: ExportCursor) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        diesel::insert_into(job_checkpoints::table)
            .values((
                job_checkpoints::job.eq(job),
                job_checkpoints::ingested_at.eq(cursor.ingested_at),
                job_checkpoints::event_id.eq(cursor.id),
            ))
            .on_conflict(job_checkpoints::job)
            .do_update()
            .set((
                job_checkpoints::ingested_at.eq(excluded(job_checkpoints::ingested_at)),
                job_checkpoints::event_id.eq(excluded(job_checkpoints::event_id)),
                job_checkpoints::updated_at.eq(diesel::dsl::now),
            ))
            .execute(&mut conn)
            .await
            .map_err(from_diesel)?;
        Ok(())
    }
}
