//! Stored events: the listing, the export stream, retention, the export checkpoints and the
//! app a bundle's etag belongs to. Writing a batch is each store's own
//! (`crate::event_writes`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use d2_events::{
    AppResolver, Decision, EventFacts, EventFilter, EventStore, ExportBatch, ExportCheckpoint,
    ExportCheckpoints, ExportCursor, NewEvent, RefusedEvents, StoredEvent,
};
use d2_kernel::{AccountId, AppName, Cursor, Page, PageRequest, StoreError};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool};
use diesel::upsert::excluded;
use diesel_async::RunQueryDsl;
use serde::{Deserialize, Serialize};

use crate::error::from_diesel;
use crate::event_writes;
use crate::id::Id;
use crate::position::{Side, beyond, in_stream};
use crate::schema::{events, ingest_refusals, job_checkpoints, policies};

#[derive(Queryable, Selectable, Insertable, Serialize, Deserialize)]
#[diesel(table_name = events, check_for_backend(crate::Db))]
pub(crate) struct EventRow {
    id: i64,
    account_id: Id,
    event_key: Vec<u8>,
    token_id: Option<Id>,
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
    pub(crate) fn id(&self) -> i64 {
        self.id
    }

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
                account_id: self.account_id.into(),
                key,
                token_id: self.token_id.map(Into::into),
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
impl EventStore for crate::Store {
    async fn insert_events(&self, batch: &[NewEvent]) -> Result<Vec<[u8; 32]>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.writer().await?;
        let keys = event_writes::insert(&mut conn, batch)
            .await
            .map_err(from_diesel)?;
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
            .filter(events::account_id.eq(Id::from(account_id)))
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
        limit: u32,
    ) -> Result<ExportBatch, StoreError> {
        let mut query = events::table
            .filter(diesel::dsl::sql::<Bool>(event_writes::FINAL_POSITIONS))
            .select((events::stream_position, EventRow::as_select()))
            .order((events::stream_position.asc(), events::id.asc()))
            .limit(i64::from(limit))
            .into_boxed();
        if let Some(cursor) = after {
            query = query.filter(in_stream(Side::After, cursor.position, cursor.id));
        }
        let mut conn = self.conn().await?;
        let rows: Vec<(i64, EventRow)> = query.load(&mut conn).await.map_err(from_diesel)?;
        let end = rows.last().map(|(position, row)| ExportCursor {
            position: *position,
            id: row.id,
        });
        Ok(ExportBatch {
            events: into_domain(rows.into_iter().map(|(_, row)| row).collect())?,
            end,
        })
    }

    async fn prune_events(
        &self,
        up_to: ExportCursor,
        older_than: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        // In slices, so each statement (each write lock, on SQLite) stays short whatever
        // the backlog.
        let mut total = 0;
        loop {
            let slice = events::table
                .filter(events::ingested_at.lt(older_than))
                .filter(in_stream(Side::UpTo, up_to.position, up_to.id))
                .select(events::id)
                .limit(PRUNE_SLICE)
                .into_boxed();
            let mut conn = self.writer().await?;
            let deleted = diesel::delete(events::table.filter(events::id.eq_any(slice)))
                .execute(&mut conn)
                .await
                .map_err(from_diesel)?;
            total += u64::try_from(deleted).unwrap_or(u64::MAX);
            if i64::try_from(deleted).unwrap_or(i64::MAX) < PRUNE_SLICE {
                return Ok(total);
            }
        }
    }

    async fn add_refusals(&self, refusals: &[RefusedEvents]) -> Result<(), StoreError> {
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        // A row at a time: a few rows a second at most, and one statement never names the
        // same (account, hour) twice.
        let mut conn = self.writer().await?;
        for refusal in refusals {
            diesel::insert_into(ingest_refusals::table)
                .values((
                    ingest_refusals::account_id.eq(Id::from(refusal.account_id)),
                    ingest_refusals::hour.eq(refusal.hour),
                    ingest_refusals::events.eq(count(refusal.events)),
                    ingest_refusals::batches.eq(count(refusal.batches)),
                ))
                .on_conflict((ingest_refusals::account_id, ingest_refusals::hour))
                .do_update()
                .set((
                    ingest_refusals::events
                        .eq(ingest_refusals::events + excluded(ingest_refusals::events)),
                    ingest_refusals::batches
                        .eq(ingest_refusals::batches + excluded(ingest_refusals::batches)),
                ))
                .execute(&mut conn)
                .await
                .map_err(from_diesel)?;
        }
        Ok(())
    }

    async fn refused_events(
        &self,
        account_id: AccountId,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let mut conn = self.conn().await?;
        // At most one row per hour of the window: summed here, where both stores agree on
        // the type of the sum.
        let counts: Vec<i64> = ingest_refusals::table
            .filter(ingest_refusals::account_id.eq(Id::from(account_id)))
            .filter(ingest_refusals::hour.ge(start))
            .filter(ingest_refusals::hour.lt(end))
            .select(ingest_refusals::events)
            .load(&mut conn)
            .await
            .map_err(from_diesel)?;
        Ok(counts
            .into_iter()
            .map(|n| u64::try_from(n).unwrap_or(0))
            .fold(0, u64::saturating_add))
    }
}

/// Rows deleted per statement by retention.
const PRUNE_SLICE: i64 = 10_000;

#[async_trait]
impl AppResolver for crate::Store {
    async fn app_for_etag(
        &self,
        account_id: AccountId,
        etag: &str,
    ) -> Result<Option<AppName>, StoreError> {
        let mut conn = self.conn().await?;
        let app: Option<String> = policies::table
            .filter(policies::account_id.eq(Id::from(account_id)))
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
impl ExportCheckpoints for crate::Store {
    async fn load(&self, job: &str) -> Result<Option<ExportCheckpoint>, StoreError> {
        let mut conn = self.conn().await?;
        let row: Option<(i64, i64, DateTime<Utc>)> = job_checkpoints::table
            .filter(job_checkpoints::job.eq(job))
            .select((
                job_checkpoints::stream_position,
                job_checkpoints::event_id,
                job_checkpoints::ingested_at,
            ))
            .first(&mut conn)
            .await
            .optional()
            .map_err(from_diesel)?;
        Ok(row.map(|(position, id, ingested_at)| ExportCheckpoint {
            cursor: ExportCursor { position, id },
            ingested_at,
        }))
    }

    async fn save(&self, job: &str, checkpoint: ExportCheckpoint) -> Result<(), StoreError> {
        let mut conn = self.writer().await?;
        diesel::insert_into(job_checkpoints::table)
            .values((
                job_checkpoints::job.eq(job),
                job_checkpoints::stream_position.eq(checkpoint.cursor.position),
                job_checkpoints::event_id.eq(checkpoint.cursor.id),
                job_checkpoints::ingested_at.eq(checkpoint.ingested_at),
                job_checkpoints::updated_at.eq(Utc::now()),
            ))
            .on_conflict(job_checkpoints::job)
            .do_update()
            .set((
                job_checkpoints::stream_position.eq(excluded(job_checkpoints::stream_position)),
                job_checkpoints::event_id.eq(excluded(job_checkpoints::event_id)),
                job_checkpoints::ingested_at.eq(excluded(job_checkpoints::ingested_at)),
                job_checkpoints::updated_at.eq(excluded(job_checkpoints::updated_at)),
            ))
            .execute(&mut conn)
            .await
            .map_err(from_diesel)?;
        Ok(())
    }
}
