use async_trait::async_trait;
use chrono::{DateTime, Utc};
use d2_kernel::{AccountId, AppName, Page, PageRequest, StoreError};

use crate::analytics::{Bucket, Dimension, Summary, TimePoint, Top};
use crate::event::{EventFilter, NewEvent, StoredEvent};
use crate::refusals::RefusedEvents;

/// A place in the export stream: the events of every account in the order the store made
/// their positions final, never the clock of the host that ingested them. The store assigns
/// `position` when the event is written (PostgreSQL: the id of the inserting transaction;
/// SQLite: the row id; the in-memory store: the insert's sequence number); `id` orders the
/// events that share one. A cursor means something only to the store that made it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct ExportCursor {
    pub position: i64,
    pub id: i64,
}

/// Events of the export stream, in cursor order, and the cursor of the last one.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExportBatch {
    pub events: Vec<StoredEvent>,
    /// Where the next batch starts; `None` when the batch is empty.
    pub end: Option<ExportCursor>,
}

/// Where a job that walks the event stream stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExportCheckpoint {
    /// The last event the job has passed.
    pub cursor: ExportCursor,
    /// The latest ingest time among the events passed: how far behind ingest the job is,
    /// for people and alerts. Never used to order or select events.
    pub ingested_at: DateTime<Utc>,
}

/// The system of record of events.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Stores the events in one transaction (one statement, not a round trip per event),
    /// skipping any whose `(account, occurred_at, key)` is stored already. Returns the keys
    /// that were new. Durable when it returns.
    async fn insert_events(&self, events: &[NewEvent]) -> Result<Vec<[u8; 32]>, StoreError>;

    /// The account's events, newest first by `(ingested_at, id)`.
    async fn list_events(
        &self,
        account_id: AccountId,
        filter: &EventFilter,
        page: &PageRequest,
    ) -> Result<Page<StoredEvent>, StoreError>;

    /// Up to `limit` events of every account after `after`, in cursor order. Only final
    /// positions are read: once `events_after` has returned an event, no event can commit
    /// at or before its cursor, however long its transaction stayed open and whatever the
    /// clock of the host that ingested it said. So a job that moves its cursor along these
    /// batches never passes an event it has not seen.
    async fn events_after(
        &self,
        after: Option<ExportCursor>,
        limit: u32,
    ) -> Result<ExportBatch, StoreError>;

    /// Deletes the events at or before `up_to` in the export stream that were ingested
    /// before `older_than`; an event after `up_to` stays, however old.
    async fn prune_events(
        &self,
        up_to: ExportCursor,
        older_than: DateTime<Utc>,
    ) -> Result<u64, StoreError>;

    /// Adds refused events to the counts of their (account, hour).
    async fn add_refusals(&self, refusals: &[RefusedEvents]) -> Result<(), StoreError>;

    /// The events refused for the account in the hours that start in `[start, end)`.
    async fn refused_events(
        &self,
        account_id: AccountId,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<u64, StoreError>;
}

/// Answers analytics queries by computing them where the events are.
#[async_trait]
pub trait AnalyticsStore: Send + Sync + 'static {
    /// Authorizations with `occurred_at` in `[start, end)`.
    async fn summary(
        &self,
        account_id: AccountId,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Summary, StoreError>;

    /// Authorizations per bucket (UTC), oldest first, only non-empty buckets.
    async fn timeseries(
        &self,
        account_id: AccountId,
        bucket: Bucket,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<TimePoint>, StoreError>;

    /// The `n` most frequent keys of `dimension` (ties by key), and the total of all keys.
    async fn top(
        &self,
        account_id: AccountId,
        dimension: Dimension,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        n: u32,
    ) -> Result<Top, StoreError>;
}

/// Where the worker exports events for analytics at volume (ClickHouse).
#[async_trait]
pub trait AnalyticsSink: Send + Sync + 'static {
    /// Creates what the sink needs (database, tables) when missing.
    async fn prepare(&self) -> Result<(), StoreError>;

    /// Writes the events. Idempotent: writing events again (a retry after a crash between
    /// this write and the checkpoint) never changes what queries answer.
    async fn write(&self, events: &[StoredEvent]) -> Result<(), StoreError>;
}

/// Durable positions of the jobs that walk the event stream.
#[async_trait]
pub trait ExportCheckpoints: Send + Sync + 'static {
    async fn load(&self, job: &str) -> Result<Option<ExportCheckpoint>, StoreError>;

    async fn save(&self, job: &str, checkpoint: ExportCheckpoint) -> Result<(), StoreError>;
}

/// Which app a published bundle's ETag belongs to (the SDK reports `policy_etag`).
#[async_trait]
pub trait AppResolver: Send + Sync + 'static {
    async fn app_for_etag(
        &self,
        account_id: AccountId,
        etag: &str,
    ) -> Result<Option<AppName>, StoreError>;
}

/// Sends accepted events elsewhere (Logflare). MUST NOT block or fail: it hands the events
/// over and returns at once.
pub trait EventForwarder: Send + Sync + 'static {
    fn forward(&self, events: &[NewEvent]);
}

/// No forwarding configured.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoForwarding;

impl EventForwarder for NoForwarding {
    fn forward(&self, _: &[NewEvent]) {}
}
