use async_trait::async_trait;
use chrono::{DateTime, Utc};
use d2_kernel::{AccountId, AppName, Page, PageRequest, StoreError};

use crate::analytics::{Bucket, Dimension, Summary, TimePoint, Top};
use crate::event::{EventFilter, NewEvent, StoredEvent};
use crate::refusals::RefusedEvents;

/// A position in the stream of stored events, in `(ingested_at, id)` order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct ExportCursor {
    pub ingested_at: DateTime<Utc>,
    pub id: i64,
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

    /// Up to `limit` events of every account after `after`, in `(ingested_at, id)` order,
    /// ingested before `settled_before` (so no transaction still in flight can later commit
    /// an event the cursor has passed).
    async fn events_after(
        &self,
        after: Option<ExportCursor>,
        settled_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// Deletes events at or before `up_to` that were ingested before `older_than`.
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
    async fn load(&self, job: &str) -> Result<Option<ExportCursor>, StoreError>;

    async fn save(&self, job: &str, cursor: ExportCursor) -> Result<(), StoreError>;
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
